"""Pushes work to the streams of this gateway as soon as it exists.

One loop serves every stream. It sleeps on an event that is set when a ready-queue
notification names a job type some stream runs, when a stream registers and when a
stream frees a slot; a one-second timeout is the safety net for lost notifications. A
pass pops ids for every stream with free slots from the queues of its job types, claims
them in Postgres and sends the assignments; passes repeat while they find work. An
assignment carries its job's trace context, through an "assign" span when tracing is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import asyncpg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from dispatchd.common import tracing
from dispatchd.platform import metrics
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store import executions
from dispatchd.platform.store.rows import Claim
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway import metrics as gateway_metrics
from dispatchd.worker_gateway.sessions import Session

log = logging.getLogger("dispatchd.gateway.dispatcher")

MAX_BATCH = 64
SAFETY_NET_SECONDS = 1.0
KNOWN_TYPES_REFRESH_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 1.0


def _trace_context(claim: Claim, worker_id: str) -> dict[str, str]:
    """What the assignment carries: its own "assign" span's context, or the job's when tracing is off here."""
    if claim.trace_context is None or not tracing.enabled() or not tracing.sampled(claim.trace_context):
        return claim.trace_context or {}  # nothing to record: the job's context as it is
    attributes: dict[str, str | int] = {
        tracing.JOB_ID: str(claim.job_id),
        tracing.JOB_TYPE: claim.job_type,
        tracing.EXECUTION_ID: str(claim.execution_id),
        tracing.ATTEMPT: claim.attempt,
        tracing.WORKER_ID: worker_id,
    }
    return tracing.record("assign", claim.trace_context, trace.SpanKind.PRODUCER, attributes)


def assignment(claim: Claim, worker_id: str) -> pb.ConnectResponse:
    lease = Timestamp()
    lease.FromDatetime(claim.lease_expires_at)
    message = pb.TaskAssignment(
        execution_id=str(claim.execution_id),
        job_type=claim.job_type,
        payload=claim.payload,
        attempt=claim.attempt,
        lease_expires_at=lease,
        job_id=str(claim.job_id),
        metadata={str(k): str(v) for k, v in (claim.metadata or {}).items()},
        claim_token=str(claim.claim_token),
        trace_context=_trace_context(claim, worker_id),
    )
    if claim.execution_timeout_ms:
        timeout = Duration()
        timeout.FromMilliseconds(claim.execution_timeout_ms)
        message.execution_timeout.CopyFrom(timeout)
    return pb.ConnectResponse(assignment=message)


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, queues: ReadyQueues, lease_seconds: float) -> None:
        self.pool = pool
        self.queues = queues
        self.lease_seconds = lease_seconds
        self.sessions: dict[uuid.UUID, Session] = {}
        self.known_types: set[str] = set()
        self._wake = asyncio.Event()
        self._stopped = False
        self._rotation = 0
        self._types_refreshed_at = 0.0

    # ----------------------------------------------------------------- membership

    def add(self, session: Session) -> None:
        session.refresh_matching(self.known_types)
        self.sessions[session.session_id] = session
        self.wake()

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)

    def find(self, execution_id: uuid.UUID, worker_id: str = "") -> Session | None:
        candidates = sorted(self.sessions.values(), key=lambda s: s.worker_id != worker_id)
        return next((s for s in candidates if execution_id in s.inflight), None)

    def by_worker(self, worker_id: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.worker_id == worker_id]

    # ----------------------------------------------------------------- wake-ups

    def wake(self) -> None:
        self._wake.set()

    def on_ready(self, job_type: str) -> None:
        """A ready queue got work; wake up only if some stream here can take it."""
        if job_type not in self.known_types:
            self.known_types.add(job_type)
            for session in self.sessions.values():
                if session.runs(job_type):
                    session.refresh_matching(self.known_types)
        if any(job_type in s.matching and s.free_slots for s in self.sessions.values()):
            self._wake.set()

    def stop(self) -> None:
        """Stop assigning (the gateway is draining)."""
        self._stopped = True
        self._wake.set()

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SAFETY_NET_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            try:
                await self._refresh_known_types()
                while not self._stopped and await self._pass():
                    pass
            except Exception as exc:  # a store is down; popped ids stay QUEUED, the scheduler re-queues them
                metrics.count_store_error(exc)
                log.warning("dispatch pass failed: %s", exc)
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)

    async def _refresh_known_types(self) -> None:
        now = time.monotonic()
        if now - self._types_refreshed_at < KNOWN_TYPES_REFRESH_SECONDS:
            return
        self._types_refreshed_at = now
        types = await self.queues.known_job_types()
        if types != self.known_types:
            self.known_types = types | self.known_types
            for session in self.sessions.values():
                session.refresh_matching(self.known_types)

    def force_refresh(self) -> None:
        """Re-read the known job types at the next pass (e.g. after missing notifications)."""
        self._types_refreshed_at = 0.0
        self._wake.set()

    async def _pass(self) -> bool:
        """One round over the streams with free slots; True if any of them may find more.

        A stream that got fewer ids than it asked for emptied its queues: no second pass
        (one more pop round trip each) for it; work queued since then sets the wake-up event,
        which brings the next pass.
        """
        ready = [s for s in self.sessions.values() if s.free_slots and s.matching]
        if not ready:
            return False
        # Rotate the start so that no stream is always first to the queue heads.
        self._rotation = (self._rotation + 1) % len(ready)
        ready = ready[self._rotation :] + ready[: self._rotation]
        if len(ready) == 1:
            return await self._fill(ready[0])
        return any(await asyncio.gather(*(self._fill(s) for s in ready)))

    async def _fill(self, session: Session) -> bool:
        """Assign what the stream's queues hold, up to its free slots; True if they may hold more."""
        async with session.fill_lock:
            free = session.free_slots
            if self._stopped or not free or not session.matching:
                return False
            wants = min(free, MAX_BATCH)
            ids = await self.queues.pop(session.matching, wants)
            if not ids:
                return False
            wanted: list[uuid.UUID] = []
            for raw in ids:
                try:
                    wanted.append(uuid.UUID(raw))
                except ValueError:
                    log.warning("dropping malformed id %r from a ready queue", raw)
            # Ids that are no longer claimable (claimed elsewhere, cancelled) are simply dropped.
            claims = await executions.claim(
                self.pool,
                wanted,
                worker_id=session.worker_id,
                session_id=session.session_id,
                lease_seconds=self.lease_seconds,
            )
            for claim in claims:
                session.inflight.add(claim.execution_id)
                if claim.step:
                    session.steps.add(claim.execution_id)
                session.send(assignment(claim, session.worker_id))
            gateway_metrics.observe_claims(claims)
            await self._announce_deadlines(claims)
            return len(ids) == wants

    async def _announce_deadlines(self, claims: list[Claim]) -> None:
        """The scheduler enforces execution timeouts; wake it when the first of these is due."""
        deadlines = [c.deadline_at for c in claims if c.deadline_at is not None]
        if not deadlines:
            return
        try:
            await self.queues.publish_due(min(deadlines))
        except Exception as exc:  # its safety-net tick still finds the deadline
            log.warning("could not announce an execution deadline: %s", exc)
