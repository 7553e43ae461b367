"""Workers: registration, offline marking, and the logs of the work they own (heartbeats: store.heartbeats)."""

from __future__ import annotations

import uuid

import asyncpg

from dispatchd.platform.states import EXECUTION_OWNED, WorkerStatus
from dispatchd.platform.store import fence
from dispatchd.platform.store.guards import one_of, value

_REGISTER = f"""
INSERT INTO workers (worker_id, session_id, gateway_id, capabilities, max_concurrency, labels,
                     status, connected_at, last_heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $6, {value(WorkerStatus.READY)}, clock_timestamp(), clock_timestamp())
ON CONFLICT (worker_id) DO UPDATE SET
    session_id = EXCLUDED.session_id, gateway_id = EXCLUDED.gateway_id,
    capabilities = EXCLUDED.capabilities, max_concurrency = EXCLUDED.max_concurrency,
    labels = EXCLUDED.labels, status = EXCLUDED.status, connected_at = EXCLUDED.connected_at,
    last_heartbeat_at = EXCLUDED.last_heartbeat_at
"""

_DISCONNECT = f"UPDATE workers SET status = {value(WorkerStatus.OFFLINE)} WHERE worker_id = $1 AND session_id = $2"

# Rows locked in worker_id order, as a heartbeat batch locks them (see store.heartbeats);
# one that heartbeats meanwhile is re-checked once its lock is free, and stays.
_SILENT_OFFLINE = f"""
WITH s AS (
    SELECT worker_id FROM workers
    WHERE NOT {one_of("status", [WorkerStatus.OFFLINE])}
      AND last_heartbeat_at < clock_timestamp() - make_interval(secs => $1)
    ORDER BY worker_id FOR UPDATE
)
UPDATE workers SET status = {value(WorkerStatus.OFFLINE)} FROM s WHERE workers.worker_id = s.worker_id
RETURNING workers.worker_id, workers.session_id
"""

_APPEND_LOG = f"""
INSERT INTO execution_logs (execution_id, stream, message, emitted_at)
SELECT execution_id, $3, $4, COALESCE($5::timestamptz, clock_timestamp()) FROM executions
WHERE execution_id = $1 AND session_id = $2 AND {one_of("status", EXECUTION_OWNED)}
"""


async def register(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    worker_id: str,
    session_id: uuid.UUID,
    gateway_id: str,
    capabilities: list[str],
    max_concurrency: int,
    labels: dict[str, str],
) -> None:
    await conn.execute(
        _REGISTER,
        worker_id,
        session_id,
        gateway_id,
        capabilities,
        max_concurrency,
        labels,
    )


async def disconnect(conn: asyncpg.Connection | asyncpg.Pool, worker_id: str, session_id: uuid.UUID) -> None:
    await conn.execute(_DISCONNECT, worker_id, session_id)


async def mark_silent_offline(
    conn: asyncpg.Connection | asyncpg.Pool, silent_seconds: float, *, epoch: int | None = None
) -> list[tuple[str, uuid.UUID | None]]:
    """Workers whose heartbeats stopped go offline; returns (worker_id, session_id) of each.

    `epoch` fences the write for the scheduler leader (see store.fence).
    """
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            return await mark_silent_offline(acquired, silent_seconds, epoch=epoch)
    async with conn.transaction():
        await fence.check(conn, epoch)
        rows = await conn.fetch(_SILENT_OFFLINE, silent_seconds)
    return [(r["worker_id"], r["session_id"]) for r in rows]


async def append_log(
    conn: asyncpg.Connection | asyncpg.Pool,
    execution_id: uuid.UUID,
    session_id: uuid.UUID,
    stream: str,
    message: str,
    emitted_at: object,
) -> bool:
    """Store a log chunk of an execution this stream owns; False (nothing stored) otherwise."""
    result: str = await conn.execute(
        _APPEND_LOG,
        execution_id,
        session_id,
        stream,
        message,
        emitted_at,
    )
    return result.endswith(" 1")
