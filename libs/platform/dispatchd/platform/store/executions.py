"""Executions: claim, start, settle (success, failure, release) and the repair queries.

Lock order, everywhere: the job row first (FOR UPDATE, in job_id order when there are
several), then its executions. Cancel, claim and settle all follow it, so they cannot
deadlock one another.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import (
    EXECUTION_OWNED,
    JOB_ACTIVE,
    ExecutionStatus,
    JobStatus,
    execution_sources,
    job_sources,
)
from dispatchd.platform.store import fence
from dispatchd.platform.store.rows import Claim, QueuedRef, Settlement

_OWNED = [int(s) for s in EXECUTION_OWNED]
_JOB_ACTIVE = [int(s) for s in JOB_ACTIVE]

_LOCK_JOBS_OF = """
SELECT job_id FROM jobs
WHERE job_id IN (SELECT job_id FROM executions WHERE execution_id = ANY($1::uuid[]))
  AND status = ANY($2::smallint[])
ORDER BY job_id FOR UPDATE
"""

_CLAIM = """
WITH c AS (
    UPDATE executions e
    SET status = 2, worker_id = $2, session_id = $3, claim_token = gen_random_uuid(),
        claimed_at = clock_timestamp(), lease_expires_at = clock_timestamp() + make_interval(secs => $4),
        deadline_at = clock_timestamp() + make_interval(secs => j.execution_timeout_ms::float8 / 1000)
    FROM jobs j
    WHERE j.job_id = e.job_id AND e.execution_id = ANY($1::uuid[]) AND e.status = 1
      AND e.available_at <= clock_timestamp() AND e.job_id = ANY($5::uuid[])
    RETURNING e.execution_id, e.job_id, e.attempt, e.claim_token, e.lease_expires_at, e.deadline_at,
              j.execution_timeout_ms
), u AS (
    UPDATE jobs SET status = 2, updated_at = clock_timestamp()
    FROM c WHERE jobs.job_id = c.job_id AND jobs.status = 1
)
SELECT c.execution_id, c.job_id, c.attempt, c.claim_token, c.lease_expires_at, c.deadline_at,
       c.execution_timeout_ms, j.job_type, j.payload, j.metadata
FROM c JOIN jobs j ON j.job_id = c.job_id
"""


async def claim(
    pool: asyncpg.Pool,
    execution_ids: list[uuid.UUID],
    *,
    worker_id: str,
    session_id: uuid.UUID,
    lease_seconds: float,
) -> list[Claim]:
    """Claim queued executions for a worker's stream; ids no longer claimable are skipped."""
    if not execution_ids:
        return []
    async with pool.acquire() as conn, conn.transaction():
        jobs = [r["job_id"] for r in await conn.fetch(_LOCK_JOBS_OF, execution_ids, _JOB_ACTIVE)]
        if not jobs:
            return []
        rows = await conn.fetch(_CLAIM, execution_ids, worker_id, session_id, lease_seconds, jobs)
    return [
        Claim(
            execution_id=r["execution_id"],
            job_id=r["job_id"],
            job_type=r["job_type"],
            payload=r["payload"],
            attempt=r["attempt"],
            metadata=r["metadata"],
            claim_token=r["claim_token"],
            lease_expires_at=r["lease_expires_at"],
            execution_timeout_ms=r["execution_timeout_ms"],
            deadline_at=r["deadline_at"],
        )
        for r in rows
    ]


async def mark_started(pool: asyncpg.Pool, execution_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """CLAIMED -> RUNNING for the owning stream; the job follows to RUNNING.

    A per-job timeout counts from here: the deadline set at claim time moves to now + timeout.
    """
    async with pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(
            "SELECT job_id, execution_timeout_ms FROM jobs"
            " WHERE job_id = (SELECT job_id FROM executions WHERE execution_id = $1) FOR UPDATE",
            execution_id,
        )
        if job is None:
            return False
        started = await conn.fetchval(
            """
            WITH now AS (SELECT clock_timestamp() AS at)  -- one reading: deadline = start + timeout exactly
            UPDATE executions SET status = 3, started_at = now.at,
                   deadline_at = now.at + make_interval(secs => $3::float8 / 1000)
            FROM now
            WHERE execution_id = $1 AND status = 2 AND session_id = $2 RETURNING job_id
            """,
            execution_id,
            session_id,
            job["execution_timeout_ms"],
        )
        if started is None:
            return False
        await conn.execute(
            "UPDATE jobs SET status = 3, updated_at = clock_timestamp()"
            " WHERE job_id = $1 AND status = ANY($2::smallint[])",
            job["job_id"],
            job_sources(JobStatus.RUNNING),
        )
        return True


@dataclass(frozen=True, slots=True)
class Owner:
    """Who may settle an execution. Unset fields are not checked."""

    worker_id: str | None = None
    session_id: uuid.UUID | None = None
    claim_token: uuid.UUID | None = None
    lease_expired: bool = False  # the scheduler settles only what it saw expire
    deadline_passed: bool = False  # ... or run past its execution timeout


def _owner_guard(owner: Owner, first_arg: int) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if owner.worker_id is not None:
        args.append(owner.worker_id)
        clauses.append(f"worker_id = ${first_arg + len(args) - 1}")
    if owner.session_id is not None:
        args.append(owner.session_id)
        clauses.append(f"session_id = ${first_arg + len(args) - 1}")
    if owner.claim_token is not None:
        args.append(owner.claim_token)
        clauses.append(f"claim_token = ${first_arg + len(args) - 1}")
    if owner.lease_expired:
        clauses.append("lease_expires_at < clock_timestamp()")
    if owner.deadline_passed:
        clauses.append("deadline_at < clock_timestamp()")
    return "".join(" AND " + c for c in clauses), args


_LOCK_JOB_OF_ONE = """
SELECT job_id, status, max_attempts, initial_backoff_ms, max_backoff_ms, job_type, priority, attempt_base
FROM jobs WHERE job_id = (SELECT job_id FROM executions WHERE execution_id = $1) FOR UPDATE
"""


async def succeed(
    pool: asyncpg.Pool, execution_id: uuid.UUID, owner: Owner, result: bytes
) -> Settlement:
    async with pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(_LOCK_JOB_OF_ONE, execution_id)
        if job is None:
            return Settlement(applied=False)
        guard, guard_args = _owner_guard(owner, 4)
        done = await conn.fetchval(
            f"""
            UPDATE executions SET status = 4, result = $2, error_message = '', lease_expires_at = NULL,
                   finished_at = clock_timestamp(), started_at = COALESCE(started_at, claimed_at)
            WHERE execution_id = $1 AND status = ANY($3::smallint[]){guard}
            RETURNING worker_id
            """,
            execution_id,
            result,
            execution_sources(ExecutionStatus.SUCCEEDED),
            *guard_args,
        )
        if done is None:
            return Settlement(applied=False, job_id=job["job_id"])
        await conn.execute(
            """
            UPDATE jobs SET status = 4, result = $2, error_message = '', finished_at = clock_timestamp(),
                   updated_at = clock_timestamp()
            WHERE job_id = $1 AND status = ANY($3::smallint[])
            """,
            job["job_id"],
            result,
            job_sources(JobStatus.SUCCEEDED),
        )
        return Settlement(
            applied=True,
            job_id=job["job_id"],
            job_status=JobStatus.SUCCEEDED,
            execution_id=execution_id,
            worker_id=done,
        )


async def fail(
    pool: asyncpg.Pool,
    execution_id: uuid.UUID,
    owner: Owner,
    error: str,
    *,
    result: bytes | None = None,
    retry_delay_ms: int | None = None,
    rng: random.Random | None = None,
    epoch: int | None = None,
) -> Settlement:
    """End an attempt as failed: queue the next attempt after backoff, or dead-letter the last.

    `retry_delay_ms` overrides the policy's backoff (0 for work released by a lost worker,
    which did not fail on its own). `epoch` fences the write for the scheduler leader.
    """
    async with pool.acquire() as conn, conn.transaction():
        await fence.check(conn, epoch)
        return await _fail_locked(conn, execution_id, owner, error, result, retry_delay_ms, rng)


async def _fail_locked(
    conn: asyncpg.Connection,
    execution_id: uuid.UUID,
    owner: Owner,
    error: str,
    result: bytes | None,
    retry_delay_ms: int | None,
    rng: random.Random | None,
) -> Settlement:
    job = await conn.fetchrow(_LOCK_JOB_OF_ONE, execution_id)
    if job is None:
        return Settlement(applied=False)
    guard, guard_args = _owner_guard(owner, 6)
    # The budget counts attempts since the latest redrive (attempt_base), not since submit.
    ended = await conn.fetchrow(
        f"""
        UPDATE executions
        SET status = CASE WHEN attempt - $5 >= $3 THEN 6 ELSE 5 END, error_message = $2, result = $4,
            lease_expires_at = NULL, finished_at = clock_timestamp()
        WHERE execution_id = $1 AND status = ANY(ARRAY[2, 3]::smallint[]){guard}
        RETURNING attempt, status, worker_id
        """,
        execution_id,
        error,
        job["max_attempts"],
        result,
        job["attempt_base"],
        *guard_args,
    )
    if ended is None:
        return Settlement(applied=False, job_id=job["job_id"])
    job_id = job["job_id"]
    worker_id = ended["worker_id"]
    if ExecutionStatus(ended["status"]) is ExecutionStatus.DEAD_LETTERED:
        await conn.execute(
            """
            UPDATE jobs SET status = 5, error_message = $2, result = $4, finished_at = clock_timestamp(),
                   updated_at = clock_timestamp()
            WHERE job_id = $1 AND status = ANY($3::smallint[])
            """,
            job_id,
            error,
            job_sources(JobStatus.FAILED),
            result,
        )
        return Settlement(
            applied=True, job_id=job_id, job_status=JobStatus.FAILED, execution_id=execution_id, worker_id=worker_id
        )
    policy = RetryPolicy(job["max_attempts"], job["initial_backoff_ms"], job["max_backoff_ms"])
    failed_attempt = ended["attempt"] - job["attempt_base"]
    delay_ms = policy.backoff_ms(failed_attempt, rng) if retry_delay_ms is None else retry_delay_ms
    next_attempt = ended["attempt"] + 1
    queued = await conn.fetchrow(
        """
        INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority, available_at)
        VALUES ($1, $2, $3, 1, $4, $5, clock_timestamp() + make_interval(secs => $6::float8 / 1000))
        RETURNING execution_id, available_at
        """,
        uuid.uuid4(),
        job_id,
        next_attempt,
        job["job_type"],
        job["priority"],
        delay_ms,
    )
    await conn.execute(
        """
        UPDATE jobs SET status = 1, attempts = $2, error_message = $3, updated_at = clock_timestamp()
        WHERE job_id = $1 AND status = ANY($4::smallint[])
        """,
        job_id,
        next_attempt,
        error,
        job_sources(JobStatus.PENDING),
    )
    ref = QueuedRef(queued["execution_id"], job["job_type"], job["priority"], queued["available_at"])
    return Settlement(
        applied=True,
        job_id=job_id,
        job_status=JobStatus.PENDING,
        retry=ref,
        execution_id=execution_id,
        worker_id=worker_id,
    )


async def release_owned(
    pool: asyncpg.Pool,
    *,
    reason: str,
    session_id: uuid.UUID | None = None,
    worker_id: str | None = None,
    exclude_session: uuid.UUID | None = None,
    epoch: int | None = None,
) -> list[Settlement]:
    """Release what a lost stream or worker held: each attempt ends, the next is queued now."""
    where: list[str] = []
    args: list[object] = []
    if session_id is not None:
        args.append(session_id)
        where.append(f"session_id = ${len(args)}")
    if worker_id is not None:
        args.append(worker_id)
        where.append(f"worker_id = ${len(args)}")
    if exclude_session is not None:
        args.append(exclude_session)
        where.append(f"session_id IS DISTINCT FROM ${len(args)}")
    assert where, "release_owned needs a session or a worker"
    ids = await pool.fetch(
        "SELECT execution_id, session_id FROM executions WHERE status = ANY(ARRAY[2, 3]::smallint[]) AND "
        + " AND ".join(where),
        *args,
    )
    settled = []
    for row in ids:
        owner = Owner(worker_id=worker_id, session_id=row["session_id"])
        settled.append(await fail(pool, row["execution_id"], owner, reason, retry_delay_ms=0, epoch=epoch))
    return settled


async def renew_leases(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: uuid.UUID,
    lease_seconds: float,
    only: list[uuid.UUID] | None = None,
) -> int:
    """Extend the leases this stream owns: all of them (the reference heartbeat semantics),
    or only those in `only` (the executions the worker says it is running)."""
    status = await conn.execute(
        """
        UPDATE executions SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
        WHERE session_id = $1 AND status = ANY(ARRAY[2, 3]::smallint[])
          AND ($3::uuid[] IS NULL OR execution_id = ANY($3::uuid[]))
        """,
        session_id,
        lease_seconds,
        only,
    )
    return int(status.split()[-1])


async def owned_by_session(conn: asyncpg.Connection | asyncpg.Pool, session_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT execution_id FROM executions WHERE session_id = $1 AND status = ANY(ARRAY[2, 3]::smallint[])",
        session_id,
    )
    return {r["execution_id"] for r in rows}


async def due_queued(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int, *, after: QueuedRef | None = None
) -> list[QueuedRef]:
    """Queued executions that are due, oldest first: what belongs on the ready queues now.

    `after` (the last ref of the previous page) continues a scan, so a backlog larger
    than `limit` is covered page by page instead of re-reading the same oldest rows.
    """
    after_at = after.available_at if after is not None else None
    after_id = after.execution_id if after is not None else None
    rows = await conn.fetch(
        """
        SELECT e.execution_id, e.job_type, e.priority, e.available_at FROM executions e
        WHERE e.status = 1 AND e.available_at <= clock_timestamp()
          AND ($2::timestamptz IS NULL OR (e.available_at, e.execution_id) > ($2, $3::uuid))
        ORDER BY e.available_at, e.execution_id LIMIT $1
        """,
        limit,
        after_at,
        after_id,
    )
    return [QueuedRef(r["execution_id"], r["job_type"], r["priority"], r["available_at"]) for r in rows]


async def seconds_until_next_due(conn: asyncpg.Connection | asyncpg.Pool) -> float | None:
    """Until the next timed event: a queued execution becoming due, or an attempt's deadline."""
    value = await conn.fetchval(
        """
        SELECT EXTRACT(EPOCH FROM LEAST(
            (SELECT min(available_at) FROM executions WHERE status = 1 AND available_at > clock_timestamp()),
            (SELECT min(deadline_at) FROM executions
             WHERE status = ANY(ARRAY[2, 3]::smallint[]) AND deadline_at IS NOT NULL)
        ) - clock_timestamp())
        """
    )
    return None if value is None else max(0.0, float(value))


async def expired_leases(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT execution_id FROM executions WHERE status = ANY(ARRAY[2, 3]::smallint[])"
        " AND lease_expires_at < clock_timestamp() ORDER BY lease_expires_at LIMIT $1",
        limit,
    )
    return [r["execution_id"] for r in rows]


async def timed_out(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    """Claimed or running executions past their per-job execution timeout, oldest deadline first."""
    rows = await conn.fetch(
        "SELECT execution_id FROM executions WHERE status = ANY(ARRAY[2, 3]::smallint[])"
        " AND deadline_at < clock_timestamp() ORDER BY deadline_at LIMIT $1",
        limit,
    )
    return [r["execution_id"] for r in rows]


async def owned_by_offline_workers(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int
) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """(execution_id, worker_id, session_id) still held by the session of a worker marked offline.

    Normally empty: the gateway releases a stream's work before marking its worker offline,
    and the scheduler right after marking a silent one. It catches a crash in between.
    """
    rows = await conn.fetch(
        """
        SELECT e.execution_id, e.worker_id, e.session_id FROM executions e
        JOIN workers w ON w.worker_id = e.worker_id AND w.session_id = e.session_id
        WHERE e.status = ANY(ARRAY[2, 3]::smallint[]) AND w.status = 4
        ORDER BY e.claimed_at LIMIT $1
        """,
        limit,
    )
    return [(r["execution_id"], r["worker_id"], r["session_id"]) for r in rows]


async def cancel_orphans(conn: asyncpg.Connection | asyncpg.Pool, *, epoch: int | None = None) -> int:
    """Repair: an active execution of a terminal job is cancelled (it must never run)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            return await cancel_orphans(acquired, epoch=epoch)
    async with conn.transaction():
        await fence.check(conn, epoch)
        status = await conn.execute(
            """
            UPDATE executions e SET status = 7, finished_at = clock_timestamp(), lease_expires_at = NULL,
                   error_message = 'job already terminal'
            FROM jobs j
            WHERE j.job_id = e.job_id AND e.status = ANY(ARRAY[1, 2, 3]::smallint[])
              AND j.status = ANY(ARRAY[4, 5, 6]::smallint[])
            """
        )
    return int(status.split()[-1])
