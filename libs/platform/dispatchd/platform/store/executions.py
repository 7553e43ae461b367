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
    JOB_ACTIVE,
    JOB_CLAIMABLE,
    JOB_FAILABLE,
    JOB_RETRYABLE,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store import fence, workflow_progress
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import checked, one_of, value
from dispatchd.platform.store.rows import Claim, QueuedRef, Settlement
from dispatchd.platform.store.workflow_progress import Progress

# One statement, one round trip: `x` names the executions by id, `j` locks their jobs (in
# job_id order) before `c` claims the executions of active jobs, then the jobs move on; an id
# whose job is no longer active is skipped. Every row is found by primary key: the status
# tests are `checked` (guards), so no plan walks a status index however stale the statistics.
_CLAIM = f"""
WITH x AS MATERIALIZED (
    SELECT execution_id, job_id FROM executions WHERE execution_id = ANY($1::uuid[])
), j AS (
    SELECT job_id, status, job_type, payload, metadata, trace_context, execution_timeout_ms, workflow_run_id
    FROM jobs WHERE job_id IN (SELECT job_id FROM x)
    ORDER BY job_id FOR UPDATE
), c AS (
    UPDATE executions e
    SET status = {value(ExecutionStatus.CLAIMED)}, worker_id = $2, session_id = $3, claim_token = gen_random_uuid(),
        claimed_at = clock_timestamp(), lease_expires_at = clock_timestamp() + make_interval(secs => $4),
        deadline_at = clock_timestamp() + make_interval(secs => j.execution_timeout_ms::float8 / 1000)
    FROM x, j
    WHERE e.execution_id = x.execution_id AND j.job_id = x.job_id AND {checked("j.status", JOB_ACTIVE)}
      AND {checked("e.status", EXECUTION_CLAIMABLE)} AND e.available_at <= clock_timestamp()
    RETURNING e.execution_id, e.job_id, e.attempt, e.claim_token, e.lease_expires_at, e.deadline_at,
              EXTRACT(EPOCH FROM e.claimed_at - e.available_at)::float8 AS waited
), u AS (
    UPDATE jobs SET status = {value(JobStatus.DISPATCHING)}, updated_at = clock_timestamp()
    FROM c WHERE jobs.job_id = c.job_id AND {checked("jobs.status", JOB_CLAIMABLE)}
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
