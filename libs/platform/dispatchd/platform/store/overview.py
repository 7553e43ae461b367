"""The cluster at a glance, from Postgres: connected workers and per-type queue statistics.

Invariant: both reads cost what is active, never what is history. Workers: the rows of the
workers table (one per worker id) with their in-flight count from the partial index on
owned executions by session. Queues: only QUEUED executions (the partial index on
available_at WHERE QUEUED) and owned ones (the partial indexes WHERE CLAIMED/RUNNING) are
read; finished executions, however many, are never touched. Postgres rather than the Redis
ready queues (ZCARD): it is the truth — Redis holds no delayed work (the scheduler queues it
when due), may hold ids already claimed or lose entries until the scheduler repairs them,
and knows nothing of running work.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.states import EXECUTION_OWNED, ExecutionStatus, WorkerStatus
from dispatchd.platform.store.guards import one_of


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker_id: str
    capabilities: list[str]
    max_concurrency: int
    in_flight: int
    status: int
    gateway_id: str | None
    labels: dict[str, str]
    connected_at: dt.datetime | None
    last_heartbeat_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class QueueRow:
    job_type: str
    depth: int
    oldest_due_at: dt.datetime | None
    delayed: int
    running: int


_WORKERS = f"""
SELECT w.worker_id, w.capabilities, w.max_concurrency, w.status, w.gateway_id, w.labels, w.connected_at,
       w.last_heartbeat_at,
       (SELECT count(*) FROM executions e
        WHERE e.session_id = w.session_id AND {one_of("e.status", EXECUTION_OWNED)})::int AS in_flight
FROM workers w
WHERE $1 OR NOT {one_of("w.status", [WorkerStatus.OFFLINE])}
ORDER BY w.worker_id LIMIT $2
"""

# `now` is read once: depth and delayed split the QUEUED executions at one instant.
_QUEUES = f"""
WITH now AS MATERIALIZED (SELECT clock_timestamp() AS at), active AS (
    SELECT job_type, available_at, false AS owned FROM executions
    WHERE {one_of("status", [ExecutionStatus.QUEUED])} AND ($1::text IS NULL OR job_type = $1)
    UNION ALL
    SELECT job_type, NULL, true FROM executions
    WHERE {one_of("status", EXECUTION_OWNED)} AND ($1::text IS NULL OR job_type = $1)
)
SELECT now.at AS as_of, s.* FROM now LEFT JOIN (
    SELECT a.job_type,
           count(*) FILTER (WHERE NOT a.owned AND a.available_at <= now.at) AS depth,
           min(a.available_at) FILTER (WHERE NOT a.owned AND a.available_at <= now.at) AS oldest_due_at,
           count(*) FILTER (WHERE NOT a.owned AND a.available_at > now.at) AS delayed,
           count(*) FILTER (WHERE a.owned) AS running
    FROM active a, now GROUP BY a.job_type
) s ON true  -- one row (with the time) even when nothing is active
ORDER BY s.job_type
"""


async def list_workers(
    conn: asyncpg.Connection | asyncpg.Pool, *, include_offline: bool, limit: int
) -> tuple[list[WorkerRow], bool]:
    """Workers by id (connected only, unless `include_offline`), at most `limit`; and whether more matched."""
    rows = await conn.fetch(_WORKERS, include_offline, limit + 1)
    workers = [WorkerRow(**dict(r)) for r in rows[:limit]]
    return workers, len(rows) > limit


async def queue_stats(
    conn: asyncpg.Connection | asyncpg.Pool, job_type: str | None
) -> tuple[list[QueueRow], dt.datetime]:
    """Per job type with queued or owned work: its statistics; and the database time they were taken at."""
    rows = await conn.fetch(_QUEUES, job_type)
    stats = [QueueRow(**{k: v for k, v in r.items() if k != "as_of"}) for r in rows if r["job_type"] is not None]
    as_of: dt.datetime = rows[0]["as_of"]
    return stats, as_of
