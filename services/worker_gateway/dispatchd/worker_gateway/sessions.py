"""A connected worker stream as the gateway sees it.

Invariant: once closed, a session queues nothing more and `ended` is set, which starts
the release of what the stream holds (without waiting for the worker to read anything).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from dispatchd.common import routing
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.lanes import Lanes
from dispatchd.worker_gateway.outbox import Outbox

REREGISTERED = "worker re-registered"


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why the gateway ends a stream; `code` None means a plain, successful end."""

    code: grpc.StatusCode | None = None
    message: str = ""


@dataclass(eq=False)
class Session:
    worker_id: str
    capabilities: tuple[str, ...]
    max_concurrency: int
    labels: dict[str, str]
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # Counted by the gateway from its own assignments: what the worker reports is ignored,
    # so a confused worker can never be sent more than max_concurrency executions.
    inflight: set[uuid.UUID] = field(default_factory=set)
    # The in-flight executions that are workflow steps (their results take the release path).
    steps: set[uuid.UUID] = field(default_factory=set)
    # Executions this stream owns that the worker left out of its heartbeat list, and
    # since when (monotonic): released once missing for a heartbeat interval.
    unlisted: dict[uuid.UUID, float] = field(default_factory=dict)
    outbox: Outbox = field(default_factory=Outbox)
    # Job types known to exist that some capability of this worker runs.
    matching: tuple[str, ...] = ()
    # The worker said it is draining (or the gateway is): no new assignments.
    draining: bool = False
    closed: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end: StreamEnd = field(default_factory=StreamEnd)
    # Recorded on what the stream still holds when it ends.
    release_reason: str = "worker stream closed"
    # Held while claiming for this stream, so the release at stream end sees every claim.
    fill_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lanes: Lanes = field(default_factory=Lanes)
    inflight_changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def batches(self) -> bool:
        """The stream negotiated batches at registration (both ways)."""
        return self.outbox.batching

    @property
    def free_slots(self) -> int:
        if self.closed or self.draining:
            return 0
        return max(0, self.max_concurrency - len(self.inflight))

    def refresh_matching(self, job_types: Iterable[str]) -> None:
        self.matching = tuple(sorted(routing.matching_job_types(self.capabilities, job_types)))

    def runs(self, job_type: str) -> bool:
        return any(routing.capability_matches(c, job_type) for c in self.capabilities)

    def send(self, message: pb.ConnectResponse) -> None:
        if not self.closed:
            self.outbox.put(message)

    def ack(self, kind: str, status: pb.AckStatus.ValueType, message: str = "", execution_id: str = "") -> None:
        ack = pb.WorkerAck(
            kind=kind, status=status, message=message, execution_id=execution_id, worker_id=self.worker_id
        )
        self.send(pb.ConnectResponse(ack=ack))

    def finish(self, execution_id: uuid.UUID) -> bool:
        """Forget an execution this stream held; True if it was in flight."""
        self.unlisted.pop(execution_id, None)
        self.steps.discard(execution_id)
        if execution_id not in self.inflight:
            return False
        self.inflight.discard(execution_id)
        self.inflight_changed.set()
        return True

    def close(self, end: StreamEnd | None = None, *, discard: bool = False) -> None:
        """End the stream after what is already queued has been sent (`discard`: at once)."""
        if self.closed:
            return
        if end is not None:
            self.end = end
        self.closed = True
        self.outbox.end(discard=discard)
        self.ended.set()
