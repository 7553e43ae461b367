"""The scheduler's repair queries: what is due, what expired, timed out or was orphaned.

None of these is on a worker's path; the leader runs them each reconcile pass. They find
work for the hot transitions (`store.executions.fail` settles what they return) and
cancel active executions of terminal jobs. Guards come from `store.guards` only.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from dispatchd.platform.states import (
    EXECUTION_CANCELLABLE,
    EXECUTION_CLAIMABLE,
    EXECUTION_OWNED,
    JOB_TERMINAL,
    ExecutionStatus,
    WorkerStatus,
)
from dispatchd.platform.store import fence
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import QueuedRef

_DUE = f"""
SELECT e.execution_id, e.job_type, e.priority, e.available_at
FROM executions e
WHERE {one_of("e.status", EXECUTION_CLAIMABLE)} AND e.available_at <= clock_timestamp()
  AND ($2::timestamptz IS NULL OR (e.available_at, e.execution_id) > ($2, $3::uuid))
ORDER BY e.available_at, e.execution_id LIMIT $1
"""

# Timed executions (delayed, retrying after a backoff) that became due after `$2`: the
# scheduler's own push. A range scan of the partial index on queued executions from the
# watermark on, so its cost follows what became due lately, not the depth of the backlog.
_NEWLY_DUE = f"""
WITH now AS (SELECT clock_timestamp() AS at)
SELECT now.at AS scanned_at, d.*
FROM now LEFT JOIN LATERAL (
    SELECT e.execution_id, e.job_type, e.priority, e.available_at
    FROM executions e
    WHERE {one_of("e.status", EXECUTION_CLAIMABLE)} AND e.available_at <= now.at
      AND e.available_at > e.queued_at
      AND ($2::timestamptz IS NULL OR (e.available_at, e.execution_id) > ($2, $3::uuid))
    ORDER BY e.available_at, e.execution_id LIMIT $1
) d ON true
"""

_NEXT_DUE = f"""
SELECT EXTRACT(EPOCH FROM LEAST(
    (SELECT min(available_at) FROM executions
     WHERE {one_of("status", EXECUTION_CLAIMABLE)} AND available_at > clock_timestamp()),
    (SELECT min(deadline_at) FROM executions
     WHERE {one_of("status", EXECUTION_OWNED)} AND deadline_at IS NOT NULL)
) - clock_timestamp())
"""

# One range scan of the partial index on queued executions (`available_at WHERE queued`).
_QUEUE_STATS = f"""
SELECT job_type, count(*) AS depth, EXTRACT(EPOCH FROM clock_timestamp() - min(available_at))::float8 AS oldest
FROM executions WHERE {one_of("status", EXECUTION_CLAIMABLE)} AND available_at <= clock_timestamp()
GROUP BY job_type
"""

_EXPIRED = f"""
SELECT execution_id FROM executions WHERE {one_of("status", EXECUTION_OWNED)}
  AND lease_expires_at < clock_timestamp() ORDER BY lease_expires_at LIMIT $1
"""

_TIMED_OUT = f"""
SELECT execution_id FROM executions WHERE {one_of("status", EXECUTION_OWNED)}
  AND deadline_at < clock_timestamp() ORDER BY deadline_at LIMIT $1
"""

_HELD_BY_OFFLINE = f"""
SELECT e.execution_id, e.worker_id, e.session_id FROM executions e
JOIN workers w ON w.worker_id = e.worker_id AND w.session_id = e.session_id
WHERE {one_of("e.status", EXECUTION_OWNED)} AND {one_of("w.status", [WorkerStatus.OFFLINE])}
ORDER BY e.claimed_at LIMIT $1
"""

_CANCEL_ORPHANS = f"""
UPDATE executions e SET status = {value(ExecutionStatus.CANCELED)}, finished_at = clock_timestamp(),
       lease_expires_at = NULL, error_message = 'job already terminal'
FROM jobs j
WHERE j.job_id = e.job_id AND {one_of("e.status", EXECUTION_CANCELLABLE)} AND {one_of("j.status", JOB_TERMINAL)}
"""


def _ref(r: asyncpg.Record) -> QueuedRef:
    return QueuedRef(r["execution_id"], r["job_type"], r["priority"], r["available_at"])


async def due_queued(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int, *, after: QueuedRef | None = None
) -> list[QueuedRef]:
    """Queued executions that are due, oldest first: what belongs on the ready queues now.

    `after` (the last ref of the previous page) continues a scan, so a backlog larger
    than `limit` is covered page by page instead of re-reading the same oldest rows.
    """
    after_at = after.available_at if after is not None else None
    after_id = after.execution_id if after is not None else None
    return [_ref(r) for r in await conn.fetch(_DUE, limit, after_at, after_id)]


async def newly_due(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int, *, after: tuple[dt.datetime, uuid.UUID] | None = None
) -> tuple[list[QueuedRef], dt.datetime]:
    """Timed queued executions (delayed, in backoff) that are due, after `after` in (available_at, id) order,
    and Postgres's clock when it looked (so a caller's next watermark is on the store's clock, not its own)."""
    after_at, after_id = after if after is not None else (None, None)
    rows = await conn.fetch(_NEWLY_DUE, limit, after_at, after_id)
    found = [_ref(r) for r in rows if r["execution_id"] is not None]
    return found, rows[0]["scanned_at"]


async def seconds_until_next_due(conn: asyncpg.Connection | asyncpg.Pool) -> float | None:
    """Until the next timed event: a queued execution becoming due, or an attempt's deadline."""
    seconds = await conn.fetchval(_NEXT_DUE)
    return None if seconds is None else max(0.0, float(seconds))


async def queue_stats(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, tuple[int, float]]:
    """Per job type with due work: how many queued executions are due, and seconds the oldest has waited."""
    rows = await conn.fetch(_QUEUE_STATS)
    return {r["job_type"]: (int(r["depth"]), max(0.0, float(r["oldest"]))) for r in rows}


async def expired_leases(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    rows = await conn.fetch(_EXPIRED, limit)
    return [r["execution_id"] for r in rows]


async def timed_out(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    """Claimed or running executions past their per-job execution timeout, oldest deadline first."""
    rows = await conn.fetch(_TIMED_OUT, limit)
    return [r["execution_id"] for r in rows]


async def owned_by_offline_workers(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int
) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """(execution_id, worker_id, session_id) still held by the session of a worker marked offline.

    Normally empty: the gateway releases a stream's work before marking its worker offline,
    and the scheduler right after marking a silent one. It catches a crash in between.
    """
    rows = await conn.fetch(_HELD_BY_OFFLINE, limit)
    return [(r["execution_id"], r["worker_id"], r["session_id"]) for r in rows]


async def cancel_orphans(conn: asyncpg.Connection | asyncpg.Pool, *, epoch: int | None = None) -> int:
    """Repair: an active execution of a terminal job is cancelled (it must never run)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            return await cancel_orphans(acquired, epoch=epoch)
    async with conn.transaction():
        await fence.check(conn, epoch)
        status = await conn.execute(_CANCEL_ORPHANS)
    return int(status.split()[-1])
