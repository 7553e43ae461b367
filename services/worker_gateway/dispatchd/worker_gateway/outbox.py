"""The outbound queue of one worker stream, bounded by pushing back on what the worker sends.

Invariant: producers (acks, assignments, cancels) never block and, while the stream lives,
nothing they queue is dropped; the bound is kept by the one reader of the worker's
messages, which does not read the next message while the queue is full (`wait_room`).
Every other producer is bounded on its own (the lanes' budget of messages being applied,
`max_concurrency` assignments), so the queue holds at most `limit` plus those. A queue
that stays full with nothing leaving it for the stall time means the worker stopped
reading its replies: `wait_room` says so and the stream is ended.
"""

from __future__ import annotations

import asyncio
from collections import deque

from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.lanes import set_within

# Replies a worker may leave unread before the gateway stops reading from it. A reading
# worker keeps this near zero; assignments of a burst may briefly exceed it.
OUTBOX_LIMIT = 256


class Outbox:
    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        # None is the end-of-stream marker.
        self._items: deque[pb.ConnectResponse | None] = deque()
        self._filled = asyncio.Event()
        self._moved = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def put(self, message: pb.ConnectResponse) -> None:
        self._items.append(message)
        self._filled.set()

    def end(self, *, discard: bool = False) -> None:
        """Queue the end marker; `discard` drops what was not sent yet (nobody will read it)."""
        if discard:
            self._items.clear()
        self._items.append(None)
        self._filled.set()

    async def get(self) -> pb.ConnectResponse | None:
        while not self._items:
            self._filled.clear()
            await self._filled.wait()
        self._moved.set()
        return self._items.popleft()

    async def wait_room(self, stall_seconds: float) -> bool:
        """Wait until the queue is below its limit; False if nothing left it for `stall_seconds`."""
        while self.full:
            self._moved.clear()
            if not await set_within(self._moved, stall_seconds):
                return False
        return True
