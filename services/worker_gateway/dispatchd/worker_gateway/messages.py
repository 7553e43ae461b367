"""What a registered worker sends: heartbeats, start notices, results and log chunks.

Every message is acknowledged with a WorkerAck naming its kind: ACCEPTED when applied,
STALE when it refers to an execution this stream no longer owns (nothing changed), and
REJECTED when malformed. A bad message never ends the stream; a lost store does, since
the worker's results could no longer be recorded. Ids are validated before anything else
and an ack never repeats what the worker sent unless it is a valid UUID: a reply costs
the gateway at most a few hundred bytes, whatever the worker sends.

Heartbeats. A heartbeat without a list (`lists_running` false, as reference clients send)
renews every lease the stream owns. A heartbeat with the list renews only the listed
executions the stream really owns, and reconciles the rest:
- listed but not owned (its lease expired, its job was cancelled or timed out): the worker
  is told to stop it with a CancelExecution, at every heartbeat while it lists it;
- owned but not listed: the assignment may still be on its way, so nothing happens at
  first; an execution still missing from a heartbeat one heartbeat interval later (two
  heartbeats in a row) is released: the attempt fails with no backoff and is retried at once.

Results. A result carrying the assignment's `claim_token` must match the current claim of
the execution, and come from the stream holding it; one without a token (reference
clients) only needs to come from that stream. Anything else is STALE. A result carrying a
trace context gets a "result" span under it (when tracing is on), covering the settlement.

Heartbeats go through the gateway's `Beats`: those of all streams that arrive together
are recorded, and their leases renewed, in one statement, and each is acknowledged once it
committed. A listing heartbeat holds its stream's fill lock (as a claim does) from before
that statement, which also reads what the stream owns, until the in-flight set is
corrected, so no claim slips in between.

Start notices and results go through the gateway's `Settler`: those of all streams that
arrive together are applied in one transaction, and each is acknowledged once that
transaction committed. A start notice has a lane of its own, so it does not hold up its
execution's result while it waits for the commit; it is queued in the settler before the
result is (its lane task is created first and queues it before its first await), and the
settler applies reports in the order queued, so a start is never applied after its result.
When both are in one batch, the start is folded into the (successful) result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import KW_ONLY, dataclass, field

import asyncpg
import grpc
from opentelemetry import trace

from dispatchd.common import tracing
from dispatchd.platform.states import WorkerStatus
from dispatchd.platform.store import executions, workers
from dispatchd.platform.store.executions import Owner
from dispatchd.platform.store.heartbeats import Beat
from dispatchd.platform.store.rows import Settlement
from dispatchd.platform.store.settlements import Finished, Started
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway import metrics
from dispatchd.worker_gateway.beats import Beats
from dispatchd.worker_gateway.dispatcher import Dispatcher
from dispatchd.worker_gateway.log_notices import LogNotices
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.sessions import REREGISTERED, Session, StreamEnd
from dispatchd.worker_gateway.settler import Settler

log = logging.getLogger("dispatchd.gateway.messages")


ACCEPTED = pb.ACK_STATUS_ACCEPTED
STALE = pb.ACK_STATUS_STALE
REJECTED = pb.ACK_STATUS_REJECTED

MAX_ERROR_CHARS = 16 * 1024
MAX_STREAM_NAME_CHARS = 32
# A worker runs at most max_concurrency (at most 1000) executions; a longer list is not a
# report of running work, and each listed id could cost a CancelExecution reply.
MAX_LISTED_RUNNING = 1000
UUID_CHARS = 36


def _clean(text: str, limit: int) -> str:
    # Postgres text cannot hold NUL; protobuf strings can.
    return text.replace("\x00", "\ufffd")[:limit]


NOT_OWNED = "execution is no longer assigned to this worker"
NOT_RUNNING = "worker no longer reports running the execution"


def _cancel(execution_id: uuid.UUID, reason: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(cancel=pb.CancelExecution(execution_id=str(execution_id), reason=reason))


def _parse_id(raw: str) -> uuid.UUID | None:
    # uuid.UUID drops any number of '-', so only the canonical length is parsed at all.
    if len(raw) != UUID_CHARS:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def _execution_id(session: Session, kind: str, raw: str) -> uuid.UUID | None:
    """The message's execution id, or None after acking it REJECTED (the id itself is not echoed)."""
    execution_id = _parse_id(raw)
    if execution_id is None:
        session.ack(kind, REJECTED, "execution_id must be a UUID")
    return execution_id


@dataclass(eq=False)  # identity semantics, as a plain class: one per gateway
class Messages:
    pool: asyncpg.Pool
    dispatcher: Dispatcher
    outcomes: Outcomes
    _: KW_ONLY
    lease_seconds: float
    max_payload_bytes: int
    heartbeat_seconds: float = 5.0
    settler: Settler = field(init=False)
    beats: Beats = field(init=False)
    log_notices: LogNotices = field(init=False)

    def __post_init__(self) -> None:
        self.settler = Settler(self.pool, self.outcomes)
        self.beats = Beats(self.pool, self.lease_seconds)
        self.log_notices = LogNotices(self.outcomes.queues)

    async def heartbeat(self, session: Session, message: pb.WorkerHeartbeat) -> None:
        if message.worker_id and message.worker_id != session.worker_id:
            session.ack("heartbeat", REJECTED, "worker_id does not match the registration")
            return
        if len(message.running_execution_ids) > MAX_LISTED_RUNNING:
            session.ack("heartbeat", REJECTED, f"a heartbeat may list at most {MAX_LISTED_RUNNING} executions")
            return
        resumed = session.draining and message.status != pb.WORKER_STATUS_DRAINING
        session.draining = message.status == pb.WORKER_STATUS_DRAINING
        slots = session.free_slots
        status = int(message.status) or int(WorkerStatus.READY)
        if message.lists_running:
            current = await self._reconcile_running(session, message, status)
        else:
            pulse = await self.beats.beat(Beat(session.worker_id, session.session_id, status))
            if current := pulse is not None:
                session.ack("heartbeat", ACCEPTED, f"renewed {pulse.renewed} lease(s)")
        if not current:
            # The worker registered again elsewhere; that stream owns its work now.
            superseded = "this stream was superseded by a newer registration of the worker"
            session.ack("heartbeat", STALE, superseded)
            session.release_reason = REREGISTERED
            self.dispatcher.remove(session)
            session.close(StreamEnd(grpc.StatusCode.ABORTED, superseded))
            return
        # Only a change wakes the dispatcher: a pass looks at every stream, and with hundreds
        # of workers a wake per heartbeat would be hundreds of passes a second for nothing.
        if resumed or session.free_slots > slots:
            self.dispatcher.wake()

    async def _reconcile_running(self, session: Session, message: pb.WorkerHeartbeat, status: int) -> bool:
        """A heartbeat with the worker's list of running executions (see the module docstring).

        False, with nothing acknowledged, when the stream was superseded.
        """
        listed: set[uuid.UUID] = set()
        malformed = 0
        for raw in message.running_execution_ids:
            parsed = _parse_id(raw)
            if parsed is None:
                malformed += 1
            else:
                listed.add(parsed)
        now = asyncio.get_running_loop().time()
        # Held while claiming: a claim cannot slip in between reading what is owned (the
        # heartbeat's statement reads it) and correcting the in-flight count below.
        async with session.fill_lock:
            pulse = await self.beats.beat(Beat(session.worker_id, session.session_id, status, tuple(listed)))
            if pulse is None:
                return False
            owned = pulse.owned or frozenset()
            for execution_id in listed - owned:
                session.send(_cancel(execution_id, NOT_OWNED))
            missing = owned - listed
            for execution_id in list(session.unlisted):
                if execution_id not in missing:
                    del session.unlisted[execution_id]
            lost = []
            for execution_id in missing:
                since = session.unlisted.setdefault(execution_id, now)
                if now - since >= self.heartbeat_seconds:
                    lost.append(execution_id)
            # What neither the store nor the worker holds any more no longer takes a slot.
            for execution_id in list(session.inflight):
                if execution_id not in owned and execution_id not in listed:
                    session.finish(execution_id)
        settled = []
        for execution_id in lost:
            owner = Owner(worker_id=session.worker_id, session_id=session.session_id)
            settlement = await executions.fail(self.pool, execution_id, owner, NOT_RUNNING, retry_delay_ms=0)
            session.finish(execution_id)
            session.send(_cancel(execution_id, NOT_RUNNING))
            if settlement.applied:
                settled.append(settlement)
        text = f"renewed {pulse.renewed} lease(s)"
        if settled:
            text += f"; released {len(settled)} execution(s) the worker no longer reports"
        if malformed:
            text += f"; ignored {malformed} malformed execution id(s)"
        session.ack("heartbeat", ACCEPTED, text)
        await self.outcomes.announce(settled)
        return True

    async def started(self, session: Session, message: pb.TaskStarted) -> None:
        execution_id = _execution_id(session, "started", message.execution_id)
        if execution_id is None:
            return
        applied = await self.settler.start(Started(execution_id, session.session_id))
        status, text = (ACCEPTED, "") if applied else (STALE, "execution is not claimed by this stream")
        session.ack("started", status, text, message.execution_id)

    async def result(self, session: Session, message: pb.TaskResult) -> None:
        execution_id = _execution_id(session, "result", message.execution_id)
        if execution_id is None:
            return
        if len(message.result) > self.max_payload_bytes:
            session.ack(
                "result",
                REJECTED,
                f"result of {len(message.result)} bytes exceeds the limit of {self.max_payload_bytes} bytes",
                message.execution_id,
            )
            return
        token = None
        if message.claim_token:
            token = _parse_id(message.claim_token)
            if token is None:
                session.ack("result", REJECTED, "claim_token must be a UUID", message.execution_id)
                return
        report = Finished(
            execution_id,
            session.worker_id,
            session.session_id,
            message.success,
            # What a success stores as is, a failure stores only when there is something.
            message.result if message.success else message.result or None,
            "" if message.success else _clean(message.error_message, MAX_ERROR_CHARS) or "failed",
            token,
            step=execution_id in session.steps,
        )
        began = tracing.now_ns() if tracing.enabled() and message.trace_context else 0
        try:
            settlement = await self.settler.finish(report)
        finally:
            # Applied or not, this stream no longer runs it: the slot is free again.
            if session.finish(execution_id):
                self.dispatcher.wake()
        if began:
            _trace_result(message, session, settlement, began)
        if not settlement.applied:
            metrics.STALE_RESULTS.inc()
            why = "this claim" if token is not None else "this stream"
            session.ack("result", STALE, f"execution is not owned by {why}", message.execution_id)
            return
        # Redis hears of it from the settler, in one pipeline for the whole batch.
        session.ack("result", ACCEPTED, "", message.execution_id)

    async def log_chunk(self, session: Session, message: pb.TaskLogChunk) -> None:
        execution_id = _execution_id(session, "log", message.execution_id)
        if execution_id is None:
            return
        if len(message.message) > self.max_payload_bytes:
            session.ack("log", REJECTED, "log chunk is too large", message.execution_id)
            return
        emitted_at = None
        if message.HasField("emitted_at"):
            try:
                emitted_at = message.emitted_at.ToDatetime(tzinfo=dt.UTC)
            except (ValueError, OverflowError):  # outside the range a Timestamp may hold
                session.ack("log", REJECTED, "emitted_at is not a valid timestamp", message.execution_id)
                return
        stored = await workers.append_log(
            self.pool,
            execution_id,
            session.session_id,
            _clean(message.stream, MAX_STREAM_NAME_CHARS) or "log",
            _clean(message.message, self.max_payload_bytes),
            emitted_at,
        )
        if stored:
            self.log_notices.stored(execution_id)  # FollowLogs hears of it in the window's one notice
        status, text = (ACCEPTED, "") if stored else (STALE, "execution is not owned by this stream")
        session.ack("log", status, text, message.execution_id)


def _trace_result(message: pb.TaskResult, session: Session, settlement: Settlement, began: int) -> None:
    if not tracing.sampled(message.trace_context):
        return  # an unsampled trace: record() would make nothing of it anyway
    outcome = ("succeeded" if message.success else "failed") if settlement.applied else "stale"
    attributes: dict[str, str] = {
        tracing.EXECUTION_ID: message.execution_id,
        tracing.WORKER_ID: session.worker_id,
        tracing.OUTCOME: outcome,
    }
    if settlement.job_id is not None:
        attributes[tracing.JOB_ID] = str(settlement.job_id)
    if settlement.retry is not None:
        attributes["dispatchd.retry_execution_id"] = str(settlement.retry.execution_id)
    tracing.record("result", message.trace_context, trace.SpanKind.CONSUMER, attributes, began)


def lane_key(request: pb.ConnectRequest) -> str:
    """Messages of one execution are applied in order; heartbeats have a lane of their own."""
    kind = request.WhichOneof("payload")
    if kind in ("result", "log_chunk", "started"):
        return item_lane_key(kind, getattr(request, kind).execution_id)
    return "heartbeat"


def item_lane_key(kind: str, execution_id: str) -> str:
    """The lane of one start notice, result or log chunk (also one item of a batch message).

    Results and log chunks of one execution share a lane; its start notices have their own
    (see the module docstring for why order still holds). Malformed ids share one lane (they
    are only rejected): no worker string longer than a UUID becomes a key.
    """
    if len(execution_id) != UUID_CHARS:
        return "malformed"
    return ("s:" if kind == "started" else "x:") + execution_id
