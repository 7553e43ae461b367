"""Executions on the hot path: claim, start, settle (success, failure, release), leases.

The scheduler's repair queries (what is due, expired, timed out, orphaned) live in
`store.repairs`; both use only the guards of `store.guards`, derived from `states.py`.

Lock order, everywhere: the job row first (FOR UPDATE, in job_id order when there are
several), then its executions (in execution_id order when there are several). Cancel,
claim and settle (one at a time or in batches, `store.settlements`) all follow it, and a
lease renewal, which locks no job, takes its executions in execution_id order too, so
none of them can deadlock another.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import (
    EXECUTION_CLAIMABLE,
    EXECUTION_OWNED,
    EXECUTION_SETTLEABLE,
    EXECUTION_STARTABLE,
    JOB_ACTIVE,
    JOB_CLAIMABLE,
    JOB_FAILABLE,
    JOB_RETRYABLE,
    JOB_STARTABLE,
    JOB_SUCCEEDABLE,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store import fence, workflow_progress
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import Claim, QueuedRef, Settlement
from dispatchd.platform.store.workflow_progress import Progress

# One statement, one round trip: `j` locks each job (in job_id order) before `c` claims
# its executions, then the jobs move on; an id whose job is no longer active is skipped.
_CLAIM = f"""
WITH j AS (
    SELECT job_id, job_type, payload, metadata, trace_context, execution_timeout_ms, workflow_run_id FROM jobs
    WHERE job_id IN (SELECT job_id FROM executions WHERE execution_id = ANY($1::uuid[]))
      AND {one_of("status", JOB_ACTIVE)}
    ORDER BY job_id FOR UPDATE
), c AS (
    UPDATE executions e
    SET status = {value(ExecutionStatus.CLAIMED)}, worker_id = $2, session_id = $3, claim_token = gen_random_uuid(),
        claimed_at = clock_timestamp(), lease_expires_at = clock_timestamp() + make_interval(secs => $4),
        deadline_at = clock_timestamp() + make_interval(secs => j.execution_timeout_ms::float8 / 1000)
    FROM j
    WHERE j.job_id = e.job_id AND e.execution_id = ANY($1::uuid[]) AND {one_of("e.status", EXECUTION_CLAIMABLE)}
      AND e.available_at <= clock_timestamp()
    RETURNING e.execution_id, e.job_id, e.attempt, e.claim_token, e.lease_expires_at, e.deadline_at,
              EXTRACT(EPOCH FROM e.claimed_at - e.available_at)::float8 AS waited
), u AS (
    UPDATE jobs SET status = {value(JobStatus.DISPATCHING)}, updated_at = clock_timestamp()
    FROM c WHERE jobs.job_id = c.job_id AND {one_of("jobs.status", JOB_CLAIMABLE)}
)
SELECT c.execution_id, c.job_id, c.attempt, c.claim_token, c.lease_expires_at, c.deadline_at,
       j.execution_timeout_ms, c.waited, j.job_type, j.payload, j.metadata, j.trace_context,
       j.workflow_run_id IS NOT NULL AS step
FROM c JOIN j ON j.job_id = c.job_id
"""


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool,
    execution_ids: list[uuid.UUID],
    *,
    worker_id: str,
    session_id: uuid.UUID,
    lease_seconds: float,
) -> list[Claim]:
    """Claim queued executions for a worker's stream; ids no longer claimable are skipped."""
    if not execution_ids:
        return []
    rows = await conn.fetch(_CLAIM, execution_ids, worker_id, session_id, lease_seconds)
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
            trace_context=r["trace_context"],
            waited_seconds=r["waited"],
            step=r["step"],
        )
        for r in rows
    ]


_LOCK_JOB_OF_STARTING = """
SELECT job_id, execution_timeout_ms FROM jobs
WHERE job_id = (SELECT job_id FROM executions WHERE execution_id = $1) FOR UPDATE
"""

_START = f"""
WITH now AS (SELECT clock_timestamp() AS at)  -- one reading: deadline = start + timeout exactly
UPDATE executions SET status = {value(ExecutionStatus.RUNNING)}, started_at = now.at,
       deadline_at = now.at + make_interval(secs => $3::float8 / 1000)
FROM now
WHERE execution_id = $1 AND {one_of("status", EXECUTION_STARTABLE)} AND session_id = $2 RETURNING job_id
"""

_JOB_STARTED = f"""
UPDATE jobs SET status = {value(JobStatus.RUNNING)}, updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", JOB_STARTABLE)}
"""


async def mark_started(pool: asyncpg.Pool, execution_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """CLAIMED -> RUNNING for the owning stream; the job follows to RUNNING.

    A per-job timeout counts from here: the deadline set at claim time moves to now + timeout.
    """
    async with pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(_LOCK_JOB_OF_STARTING, execution_id)
        if job is None:
            return False
        started = await conn.fetchval(_START, execution_id, session_id, job["execution_timeout_ms"])
        if started is None:
            return False
        await conn.execute(_JOB_STARTED, job["job_id"])
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
SELECT job_id, status, max_attempts, initial_backoff_ms, max_backoff_ms, job_type, priority, attempt_base,
       workflow_run_id, EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 AS age_seconds
FROM jobs WHERE job_id = (SELECT job_id FROM executions WHERE execution_id = $1) FOR UPDATE
"""


_SUCCEED = f"""
UPDATE executions SET status = {value(ExecutionStatus.SUCCEEDED)}, result = $2, error_message = '',
       lease_expires_at = NULL, finished_at = clock_timestamp(), started_at = COALESCE(started_at, claimed_at)
WHERE execution_id = $1 AND {one_of("status", EXECUTION_SETTLEABLE)}"""

_JOB_SUCCEEDED = f"""
UPDATE jobs SET status = {value(JobStatus.SUCCEEDED)}, result = $2, error_message = '',
       finished_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", JOB_SUCCEEDABLE)}
"""


async def succeed(pool: asyncpg.Pool, execution_id: uuid.UUID, owner: Owner, result: bytes) -> Settlement:
    async with pool.acquire() as conn, conn.transaction():
        job = await conn.fetchrow(_LOCK_JOB_OF_ONE, execution_id)
        if job is None:
            return Settlement(applied=False)
        guard, guard_args = _owner_guard(owner, 3)
        done = await conn.fetchval(_SUCCEED + guard + " RETURNING worker_id", execution_id, result, *guard_args)
        if done is None:
            return Settlement(applied=False, job_id=job["job_id"])
        await conn.execute(_JOB_SUCCEEDED, job["job_id"], result)
        return Settlement(
            applied=True,
            job_id=job["job_id"],
            job_status=JobStatus.SUCCEEDED,
            execution_id=execution_id,
            worker_id=done,
            job_type=job["job_type"],
            job_age_seconds=job["age_seconds"],
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
        return await fail_locked(conn, execution_id, owner, error, result, retry_delay_ms, rng)


# The budget counts attempts since the latest redrive (attempt_base), not since submit.
_FAIL = f"""
UPDATE executions
SET status = CASE WHEN attempt - $5 >= $3 THEN {value(ExecutionStatus.DEAD_LETTERED)}
                  ELSE {value(ExecutionStatus.FAILED)} END,
    error_message = $2, result = $4, lease_expires_at = NULL, finished_at = clock_timestamp()
WHERE execution_id = $1 AND {one_of("status", EXECUTION_SETTLEABLE)}"""

_JOB_FAILED = f"""
UPDATE jobs SET status = {value(JobStatus.FAILED)}, error_message = $2, result = $3,
       finished_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", JOB_FAILABLE)}
"""

_QUEUE_RETRY = f"""
INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority, available_at)
VALUES ($1, $2, $3, {value(ExecutionStatus.QUEUED)}, $4, $5,
        clock_timestamp() + make_interval(secs => $6::float8 / 1000))
RETURNING execution_id, available_at
"""

_JOB_RETRIED = f"""
UPDATE jobs SET status = {value(JobStatus.PENDING)}, attempts = $2, error_message = $3, updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", JOB_RETRYABLE)}
"""


async def fail_locked(
    conn: asyncpg.Connection,
    execution_id: uuid.UUID,
    owner: Owner,
    error: str,
    result: bytes | None = None,
    retry_delay_ms: int | None = None,
    rng: random.Random | None = None,
) -> Settlement:
    """`fail` inside the caller's transaction (which may already hold the job's lock)."""
    job = await conn.fetchrow(_LOCK_JOB_OF_ONE, execution_id)
    if job is None:
        return Settlement(applied=False)
    guard, guard_args = _owner_guard(owner, 6)
    ended = await conn.fetchrow(
        _FAIL + guard + " RETURNING attempt, status, worker_id",
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
        await conn.execute(_JOB_FAILED, job_id, error, result)
        # A workflow step's dead letter fails its run (or, continue_on_failure, lets it go on).
        progress = Progress()
        if job["workflow_run_id"] is not None:
            progress = await workflow_progress.advance(conn, [job["workflow_run_id"]])
        return Settlement(
            applied=True,
            job_id=job_id,
            job_status=JobStatus.FAILED,
            execution_id=execution_id,
            worker_id=worker_id,
            job_type=job["job_type"],
            job_age_seconds=job["age_seconds"],
            released=tuple(progress.queued),
            ended=tuple(progress.ended),
        )
    policy = RetryPolicy(job["max_attempts"], job["initial_backoff_ms"], job["max_backoff_ms"])
    failed_attempt = ended["attempt"] - job["attempt_base"]
    delay_ms = policy.backoff_ms(failed_attempt, rng) if retry_delay_ms is None else retry_delay_ms
    next_attempt = ended["attempt"] + 1
    queued = await conn.fetchrow(
        _QUEUE_RETRY,
        uuid.uuid4(),
        job_id,
        next_attempt,
        job["job_type"],
        job["priority"],
        delay_ms,
    )
    await conn.execute(_JOB_RETRIED, job_id, next_attempt, error)
    ref = QueuedRef(queued["execution_id"], job["job_type"], job["priority"], queued["available_at"])
    return Settlement(
        applied=True,
        job_id=job_id,
        job_status=JobStatus.PENDING,
        retry=ref,
        execution_id=execution_id,
        worker_id=worker_id,
        job_type=job["job_type"],
    )


_OWNED_ROWS = f"SELECT execution_id, session_id FROM executions WHERE {one_of('status', EXECUTION_OWNED)}"

_OWNED_BY_SESSION = f"{_OWNED_ROWS} AND session_id = $1"

# Rows locked in execution_id order, as a settlement batch locks them (see store.settlements).
_RENEW = f"""
WITH l AS (
    SELECT execution_id FROM executions
    WHERE session_id = $1 AND {one_of("status", EXECUTION_OWNED)}
      AND ($3::uuid[] IS NULL OR execution_id = ANY($3::uuid[]))
    ORDER BY execution_id FOR UPDATE
)
UPDATE executions e SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
FROM l WHERE e.execution_id = l.execution_id
"""


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
    args: list[object] = []
    where = where_set(
        args,
        ("session_id = {}", session_id),
        ("worker_id = {}", worker_id),
        ("session_id IS DISTINCT FROM {}", exclude_session),
    )
    assert where, "release_owned needs a session or a worker"
    ids = await pool.fetch(f"{_OWNED_ROWS} AND " + " AND ".join(where), *args)
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
        _RENEW,
        session_id,
        lease_seconds,
        only,
    )
    return int(status.split()[-1])


async def owned_by_session(conn: asyncpg.Connection | asyncpg.Pool, session_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.fetch(_OWNED_BY_SESSION, session_id)
    return {r["execution_id"] for r in rows}
