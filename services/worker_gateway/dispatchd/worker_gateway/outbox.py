"""The outbound queue of one worker stream, bounded by pushing back on what the worker sends.

Invariant: producers (acks, assignments, cancels) never block and, while the stream lives,
nothing they queue is dropped; the bound is kept by the one reader of the worker's
messages, which does not read the next message while the queue is full (`wait_room`).
Every other producer is bounded on its own (the lanes' budget of messages being applied,
`max_concurrency` assignments), so the queue holds at most `limit` plus those. A queue
that stays full with nothing leaving it for the stall time means the worker stopped
reading its replies: `wait_room` says so and the stream is ended.

A batching stream (negotiated at registration) gets what is queued when the writer comes
for it packed by `dispatchd.common.packing`: assignments into one TaskAssignmentBatch and
acks into one WorkerAckBatch, at most BATCH_CAP each; cancels, drain signals, the
registration ack and the end marker go alone, in their place. A stream that did not
negotiate gets every message as it was queued, one by one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from dispatchd.common import packing
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.lanes import set_within

# Replies a worker may leave unread before the gateway stops reading from it. A reading
# worker keeps this near zero; assignments of a burst may briefly exceed it.
OUTBOX_LIMIT = 256
# Items per batch message: past a few dozen a larger message saves next to nothing.
BATCH_CAP = 64


def _classify(message: pb.ConnectResponse | None) -> packing.Packable:
    if message is None:
        return None
    kind = message.WhichOneof("payload")
    if kind == "assignment":
        return kind, message.assignment.execution_id
    if kind == "ack" and message.ack.kind != "registration":
        return kind, message.ack.execution_id
    return None


def _pack(group: list[pb.ConnectResponse | None]) -> pb.ConnectResponse | None:
    if len(group) == 1:
        return group[0]
    if group[0] is not None and group[0].WhichOneof("payload") == "assignment":
        return pb.ConnectResponse(
            assignment_batch=pb.TaskAssignmentBatch(assignments=[m.assignment for m in group if m is not None])
        )
    return pb.ConnectResponse(ack_batch=pb.WorkerAckBatch(acks=[m.ack for m in group if m is not None]))


class Outbox:
    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        # Set once the stream negotiated batches (after its registration ack is queued).
        self.batching = False
        # Packed messages of the current window not yet handed to the writer.
        self._packed: deque[pb.ConnectResponse | None] = deque()
        # None is the end-of-stream marker.
        self._items: deque[pb.ConnectResponse | None] = deque()
        self._filled = asyncio.Event()
        self._moved = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items) + len(self._packed)

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
            self._packed.clear()
        self._items.append(None)
        self._filled.set()

    async def get(self) -> pb.ConnectResponse | None:
        """The next message to write; None once the stream ends."""
        if not self._packed:
            while not self._items:
                self._filled.clear()
                await self._filled.wait()
            if not self.batching:
                self._moved.set()
                return self._items.popleft()
            self._packed.extend(_pack(group) for group in packing.take(self._items, _classify, BATCH_CAP))
        self._moved.set()
        return self._packed.popleft()

    async def wait_room(self, stall_seconds: float) -> bool:
        """Wait until the queue is below its limit; False if nothing left it for `stall_seconds`."""
        while self.full:
            self._moved.clear()
            if not await set_within(self._moved, stall_seconds):
                return False
        return True
