"""Messages waiting to be written to the stream, in order, by one writer.

gRPC allows one write at a time per call, so every producer (handlers, heartbeats, the
reader answering acks) puts here and a single task writes. Log lines wait for room when
the stream falls behind, so a chatty handler slows down instead of filling memory;
results and heartbeats never wait.
"""

from __future__ import annotations

import asyncio
from collections import deque

from dispatchd.v1 import worker_service_pb2 as pb


class Outbox:
    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._queue: deque[pb.ConnectRequest | None] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def put(self, message: pb.ConnectRequest) -> None:
        if self.closed:
            return
        self._queue.append(message)
        self._ready.set()

    async def put_throttled(self, message: pb.ConnectRequest) -> None:
        while len(self._queue) >= self.limit and not self.closed:
            self._room.clear()
            await self._room.wait()
        self.put(message)

    def close(self) -> None:
        """No more messages: the writer finishes what is queued, then half-closes the stream."""
        if self.closed:
            return
        self.closed = True
        self._queue.append(None)
        self._ready.set()
        self._room.set()

    async def get(self) -> pb.ConnectRequest | None:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        message = self._queue.popleft()
        if len(self._queue) < self.limit:
            self._room.set()
        return message

    def __len__(self) -> int:
        return len(self._queue)
