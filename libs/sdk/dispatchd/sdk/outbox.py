"""Messages waiting to be written to the stream, in order, by one writer.

gRPC allows one write at a time per call, so every producer (handlers, heartbeats, the
reader answering acks) puts here and a single task writes. Log lines wait for room when
the stream falls behind, so a chatty handler slows down instead of filling memory;
results and heartbeats never wait.

Once the gateway enabled batches (registration ack), the writer gets what was queued
since its last write packed by `dispatchd.common.packing`: results into one
TaskResultBatch, start notices into one TaskStartedBatch; heartbeats, log chunks and token
refreshes go alone, in their place. No timer holds anything back: a lone result goes out
at once, and what became ready while the writer was busy goes out together. A start
notice still queued when its execution's result is queued is dropped (folded), with or
without batches: the gateway takes a result without a start as started at its claim.
"""

from __future__ import annotations

import asyncio
from collections import deque

from dispatchd.common import packing
from dispatchd.v1 import worker_service_pb2 as pb

# Items per batch message: past a few dozen a larger message saves next to nothing.
BATCH_CAP = 64


class Outbox:
    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._queue: deque[pb.ConnectRequest | None] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False
        # Set when the registration ack enabled batches on this stream.
        self.batching = False
        # Packed messages of the current window not yet handed to the writer.
        self._packed: deque[pb.ConnectRequest | None] = deque()
        # Start notices queued and not yet taken by the writer, by execution id.
        self._unsent_started: dict[str, pb.ConnectRequest] = {}

    def put(self, message: pb.ConnectRequest) -> None:
        if self.closed:
            return
        self._queue.append(message)
        self._ready.set()

    def put_started(self, execution_id: str) -> None:
        message = pb.ConnectRequest(started=pb.TaskStarted(execution_id=execution_id))
        if not self.closed:
            self._unsent_started[execution_id] = message
        self.put(message)

    def put_result(self, result: pb.TaskResult) -> None:
        folded = self._unsent_started.pop(result.execution_id, None)
        if folded is not None:
            folded.Clear()  # no payload: dropped when the writer comes to it
        self.put(pb.ConnectRequest(result=result))

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
        """The next message to write; None once closed and everything queued was taken."""
        while not self._packed:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            if self.batching:
                self._packed.extend(self._pack(group) for group in packing.take(self._queue, self._classify, BATCH_CAP))
            elif self._classify(self._queue[0]) is packing.DROP:
                self._queue.popleft()
            else:
                self._packed.append(self._pack([self._queue.popleft()]))
        if len(self._queue) < self.limit:
            self._room.set()
        return self._packed.popleft()

    def _classify(self, message: pb.ConnectRequest | None) -> packing.Packable:
        if message is None:
            return None
        kind = message.WhichOneof("payload")
        if kind is None:
            return packing.DROP
        if kind == "started":
            return kind, message.started.execution_id
        if kind == "result":
            return kind, message.result.execution_id
        return None

    def _pack(self, group: list[pb.ConnectRequest | None]) -> pb.ConnectRequest | None:
        """One message for a group `packing.take` made; taken start notices can no longer be folded."""
        first = group[0]
        if first is None or not first.HasField("started"):
            if len(group) == 1:
                return first
            results = [m.result for m in group if m is not None]
            return pb.ConnectRequest(result_batch=pb.TaskResultBatch(results=results))
        for message in group:
            if message is not None:
                self._unsent_started.pop(message.started.execution_id, None)
        if len(group) == 1:
            return first
        return pb.ConnectRequest(started_batch=pb.TaskStartedBatch(started=[m.started for m in group if m is not None]))

    def __len__(self) -> int:
        return len(self._queue) + len(self._packed)
