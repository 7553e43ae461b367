"""What a registered worker sends: heartbeats, start notices, results and log chunks.

Every message is acknowledged with a WorkerAck naming its kind: ACCEPTED when applied,
STALE when it refers to an execution this stream no longer owns (nothing changed), and
REJECTED when malformed. A bad message never ends the stream; a lost store does, since
the worker's results could no longer be recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import asyncpg
import grpc
import redis.exceptions

from dispatchd.platform.store import executions, workers
from dispatchd.platform.store.executions import Owner
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.dispatcher import Dispatcher
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.sessions import REREGISTERED, Session, StreamEnd

log = logging.getLogger("dispatchd.gateway.messages")

ACCEPTED = pb.ACK_STATUS_ACCEPTED
STALE = pb.ACK_STATUS_STALE
REJECTED = pb.ACK_STATUS_REJECTED

MAX_ERROR_CHARS = 16 * 1024
MAX_STREAM_NAME_CHARS = 32

STORE_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def _clean(text: str, limit: int) -> str:
    # Postgres text cannot hold NUL; protobuf strings can.
    return text.replace("\x00", "\ufffd")[:limit]


def _parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


class Messages:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dispatcher: Dispatcher,
        outcomes: Outcomes,
        *,
        lease_seconds: float,
        max_payload_bytes: int,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.outcomes = outcomes
        self.lease_seconds = lease_seconds
        self.max_payload_bytes = max_payload_bytes

    async def heartbeat(self, session: Session, message: pb.WorkerHeartbeat) -> None:
        session.draining = message.status == pb.WORKER_STATUS_DRAINING
        if message.worker_id and message.worker_id != session.worker_id:
            session.ack("heartbeat", REJECTED, f"worker_id {message.worker_id!r} does not match the registration")
            return
        current = await workers.heartbeat(self.pool, session.worker_id, session.session_id, int(message.status))
        if not current:
            # The worker registered again elsewhere; that stream owns its work now.
            superseded = "this stream was superseded by a newer registration of the worker"
            session.ack("heartbeat", STALE, superseded)
            session.release_reason = REREGISTERED
            self.dispatcher.remove(session)
            session.close(StreamEnd(grpc.StatusCode.ABORTED, superseded))
            return
        renewed = await executions.renew_leases(self.pool, session.session_id, self.lease_seconds)
        session.ack("heartbeat", ACCEPTED, f"renewed {renewed} lease(s)")
        if not session.draining:
            self.dispatcher.wake()

    async def started(self, session: Session, message: pb.TaskStarted) -> None:
        execution_id = _parse_id(message.execution_id)
        if execution_id is None:
            session.ack("started", REJECTED, "execution_id must be a UUID", message.execution_id)
            return
        applied = await executions.mark_started(self.pool, execution_id, session.session_id)
        status, text = (ACCEPTED, "") if applied else (STALE, "execution is not claimed by this stream")
        session.ack("started", status, text, message.execution_id)

    async def result(self, session: Session, message: pb.TaskResult) -> None:
        execution_id = _parse_id(message.execution_id)
        if execution_id is None:
            session.ack("result", REJECTED, "execution_id must be a UUID", message.execution_id)
            return
        if len(message.result) > self.max_payload_bytes:
            session.ack(
                "result",
                REJECTED,
                f"result of {len(message.result)} bytes exceeds the limit of {self.max_payload_bytes} bytes",
                message.execution_id,
            )
            return
        owner = Owner(worker_id=session.worker_id, session_id=session.session_id)
        try:
            if message.success:
                settlement = await executions.succeed(self.pool, execution_id, owner, message.result)
            else:
                error = _clean(message.error_message, MAX_ERROR_CHARS) or "failed"
                settlement = await executions.fail(
                    self.pool, execution_id, owner, error, result=message.result or None
                )
        finally:
            # Applied or not, this stream no longer runs it: the slot is free again.
            if session.finish(execution_id):
                self.dispatcher.wake()
        if not settlement.applied:
            session.ack("result", STALE, "execution is not owned by this stream", message.execution_id)
            return
        session.ack("result", ACCEPTED, "", message.execution_id)
        await self.outcomes.announce([settlement])

    async def log_chunk(self, session: Session, message: pb.TaskLogChunk) -> None:
        execution_id = _parse_id(message.execution_id)
        if execution_id is None:
            session.ack("log", REJECTED, "execution_id must be a UUID", message.execution_id)
            return
        if len(message.message) > self.max_payload_bytes:
            session.ack("log", REJECTED, "log chunk is too large", message.execution_id)
            return
        emitted_at = message.emitted_at.ToDatetime(tzinfo=dt.UTC) if message.HasField("emitted_at") else None
        stored = await workers.append_log(
            self.pool,
            execution_id,
            session.session_id,
            _clean(message.stream, MAX_STREAM_NAME_CHARS) or "log",
            _clean(message.message, self.max_payload_bytes),
            emitted_at,
        )
        status, text = (ACCEPTED, "") if stored else (STALE, "execution is not owned by this stream")
        session.ack("log", status, text, message.execution_id)


def lane_key(request: pb.ConnectRequest) -> str:
    """Messages of one execution are applied in order; heartbeats have a lane of their own."""
    kind = request.WhichOneof("payload")
    if kind == "result":
        return "x:" + request.result.execution_id
    if kind == "log_chunk":
        return "x:" + request.log_chunk.execution_id
    if kind == "started":
        return "x:" + request.started.execution_id
    return "heartbeat"

