"""Jobs: submit (with idempotency), read, list and cancel."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform import paging
from dispatchd.platform.errors import AlreadyExists, FailedPrecondition, NotFound
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import (
    EXECUTION_CANCELLABLE,
    JOB_CANCELLABLE,
    JOB_TERMINAL,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import ExecutionRow, JobRow, QueuedRef


@dataclass(frozen=True, slots=True)
class NewJob:
    job_type: str
    payload: bytes
    priority: int
    idempotency_key: str | None
    metadata: dict[str, str]
    retry: RetryPolicy
    retry_policy_set: bool
    execution_timeout_ms: int | None = None
    # When the first attempt may run: at `run_at` (a past time means now), or `delay_ms`
    # after the insert (by the database clock). At most one is set.
    run_at: dt.datetime | None = None
    delay_ms: int | None = None
    # The authenticated subject submitting it (None without authentication). Idempotency keys
    # are unique per submitter, so one subject's key never meets another's job; all
    # unauthenticated submits share one scope.
    submitted_by: str | None = None
    # The W3C trace context of the submit's span (None: tracing off). Not part of the request
    # hash: a resubmit from another trace is the same request.
    trace_context: dict[str, str] | None = None

    def request_hash(self) -> bytes:
        """Fingerprint of everything the caller sent, to tell a resubmit from a conflict."""
        parts: list[object] = [
            self.job_type,
            self.payload.hex(),
            self.priority,
            sorted(self.metadata.items()),
            [self.retry.max_attempts, self.retry.initial_backoff_ms, self.retry.max_backoff_ms],
        ]
        if self.execution_timeout_ms is not None or self.run_at is not None or self.delay_ms is not None:
            # Only when used, so keys of jobs submitted without these fields keep their hash.
            run_at = self.run_at.isoformat() if self.run_at is not None else None
            parts.append([self.execution_timeout_ms, run_at, self.delay_ms])
        if self.submitted_by is not None:
            # Redundant since keys are scoped per submitter; kept so existing keys keep their hash.
            parts.append(["submitted_by", self.submitted_by])
        canonical = json.dumps(parts, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True, slots=True)
class Submitted:
    job: JobRow
    queued: QueuedRef | None  # None when an earlier job was returned
    deduplicated: bool


_INSERT_JOB = f"""
WITH n AS (SELECT clock_timestamp() AS now), j AS (
    INSERT INTO jobs (job_id, job_type, payload, status, priority, idempotency_key, request_hash,
                      metadata, max_attempts, initial_backoff_ms, max_backoff_ms, retry_policy_set,
                      execution_timeout_ms, run_at, submitted_by, trace_context, created_at, updated_at)
    SELECT $1, $2, $3, {value(JobStatus.PENDING)}, $4, $5, $6, $7, $8, $9, $10, $11, $13,
           -- One clock reading, so a run_at in the past is exactly the creation time.
           CASE WHEN $14::timestamptz IS NOT NULL THEN GREATEST($14::timestamptz, n.now)
                WHEN $15::bigint IS NOT NULL THEN n.now + make_interval(secs => $15::float8 / 1000)
           END, $16, $17, n.now, n.now
    FROM n
    ON CONFLICT (submitted_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), e AS (
    INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority, queued_at, available_at)
    SELECT $12, j.job_id, 1, {value(ExecutionStatus.QUEUED)}, j.job_type, j.priority, j.created_at,
           GREATEST(j.created_at, j.run_at)
    FROM j
    RETURNING execution_id, available_at
)
SELECT j.*, e.execution_id AS queued_execution_id, e.available_at AS queued_available_at FROM j, e
"""

# The key's scope is the submitter's; `IS NULL` rather than `IS NOT DISTINCT FROM`, which no
# index serves, for the shared scope of unauthenticated submits.
_BY_KEY = "SELECT * FROM jobs WHERE idempotency_key = $1 AND submitted_by = $2"
_BY_ANONYMOUS_KEY = "SELECT * FROM jobs WHERE idempotency_key = $1 AND submitted_by IS NULL"


async def submit(conn: asyncpg.Connection | asyncpg.Pool, new: NewJob) -> Submitted:
    digest = new.request_hash()
    row = await conn.fetchrow(
        _INSERT_JOB,
        uuid.uuid4(),
        new.job_type,
        new.payload,
        new.priority,
        new.idempotency_key,
        digest if new.idempotency_key else None,
        new.metadata,
        new.retry.max_attempts,
        new.retry.initial_backoff_ms,
        new.retry.max_backoff_ms,
        new.retry_policy_set,
        uuid.uuid4(),
        new.execution_timeout_ms,
        new.run_at,
        new.delay_ms,
        new.submitted_by,
        new.trace_context,
    )
    if row is not None:
        job = JobRow.from_record(row)
        ref = QueuedRef(row["queued_execution_id"], job.job_type, job.priority, row["queued_available_at"])
        return Submitted(job, ref, deduplicated=False)
    # The key is taken: ON CONFLICT waited for the other insert to commit, so it is visible.
    if new.submitted_by is None:
        existing = await conn.fetchrow(_BY_ANONYMOUS_KEY, new.idempotency_key)
    else:
        existing = await conn.fetchrow(_BY_KEY, new.idempotency_key, new.submitted_by)
    if existing is None:  # deleted in between; extremely unlikely, but never lose the submit
        return await submit(conn, new)
    if bytes(existing["request_hash"] or b"") != digest:
        raise AlreadyExists(
            f"idempotency key {new.idempotency_key!r} is already used by job {existing['job_id']} "
            "with a different request"
        )
    return Submitted(JobRow.from_record(existing), None, deduplicated=True)


async def get(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> JobRow:
    row = await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return JobRow.from_record(row)


async def list_jobs(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    status: JobStatus | None,
    job_type: str | None,
    page_size: int,
    after: paging.TimeId | None,
    submitted_by: str | None = None,
) -> tuple[list[JobRow], paging.TimeId | None]:
    """Newest first; keyset paging on (created_at, job_id) so pages never skip or repeat.

    Returns the page and the key of its last row when more rows follow (None after the last page).
    """
    args: list[object] = []
    where = where_set(
        args,
        ("submitted_by = {}", submitted_by),
        ("status = {}", None if status is None else int(status)),
        ("job_type = {}", job_type or None),
    )
    if after is not None:
        args += list(after)
        where.append(f"(created_at, job_id) < (${len(args) - 1}, ${len(args)})")
    args.append(page_size + 1)
    sql = (
        "SELECT * FROM jobs"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY created_at DESC, job_id DESC LIMIT ${len(args)}"
    )
    rows = [JobRow.from_record(r) for r in await conn.fetch(sql, *args)]
    if len(rows) <= page_size:
        return rows, None
    rows = rows[:page_size]
    return rows, (rows[-1].created_at, rows[-1].job_id)


async def list_executions(
    conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID, *, page_size: int, after: int
) -> tuple[list[ExecutionRow], int | None]:
    """Attempts after `after`, in order; and the last one's attempt when more follow."""
    rows = await conn.fetch(
        """
        SELECT e.*, j.job_id AS job_exists FROM jobs j
        LEFT JOIN executions e ON e.job_id = j.job_id AND e.attempt > $2
        WHERE j.job_id = $1 ORDER BY e.attempt LIMIT $3
        """,
        job_id,
        after,
        page_size + 1,
    )
    if not rows:
        raise NotFound(f"job {job_id} not found")
    executions = [ExecutionRow.from_record(r) for r in rows if r["execution_id"] is not None]
    if len(executions) <= page_size:
        return executions, None
    executions = executions[:page_size]
    return executions, executions[-1].attempt


@dataclass(frozen=True, slots=True)
class Cancelled:
    job: JobRow
    # Executions that a worker held when the job was cancelled: (execution_id, worker_id).
    stopped: list[tuple[uuid.UUID, str]]
    changed: bool


_CANCEL_EXECUTIONS = f"""
UPDATE executions SET status = {value(ExecutionStatus.CANCELED)}, finished_at = clock_timestamp(),
       lease_expires_at = NULL, error_message = $2
WHERE job_id = $1 AND {one_of("status", EXECUTION_CANCELLABLE)}
RETURNING execution_id, worker_id
"""

_CANCEL_JOB = f"""
UPDATE jobs SET status = {value(JobStatus.CANCELED)}, error_message = $2, finished_at = clock_timestamp(),
       updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", JOB_CANCELLABLE)} RETURNING *
"""


async def cancel(pool: asyncpg.Pool, job_id: uuid.UUID, reason: str) -> Cancelled:
    """Cancel a job that is not terminal yet; cancelling a cancelled job is a no-op."""
    async with pool.acquire() as conn, conn.transaction():
        # Lock order everywhere: the job row first, then its executions.
        status = await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        if status is None:
            raise NotFound(f"job {job_id} not found")
        if JobStatus(status) in JOB_TERMINAL:
            job = await get(conn, job_id)
            if job.status is JobStatus.CANCELED:
                return Cancelled(job, [], changed=False)
            raise FailedPrecondition(f"job {job_id} is already {job.status.name.lower()}; it cannot be cancelled")
        owned = await conn.fetch(_CANCEL_EXECUTIONS, job_id, reason or "cancelled")
        row = await conn.fetchrow(_CANCEL_JOB, job_id, reason or "cancelled")
        assert row is not None  # the row is locked and active
        stopped = [(r["execution_id"], r["worker_id"]) for r in owned if r["worker_id"]]
        return Cancelled(JobRow.from_record(row), stopped, changed=True)


def is_terminal(status: JobStatus) -> bool:
    return status in JOB_TERMINAL
