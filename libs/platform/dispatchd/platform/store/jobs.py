"""Jobs: read, list and cancel (submitting them is `submits`)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import asyncpg

from dispatchd.platform import paging
from dispatchd.platform.errors import FailedPrecondition, NotFound
from dispatchd.platform.states import (
    EXECUTION_CANCELLABLE,
    JOB_CANCELLABLE,
    JOB_TERMINAL,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store import workflow_progress
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import ExecutionRow, JobRow
from dispatchd.platform.store.workflow_progress import Progress


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
    created: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
    idempotency_key: str | None = None,
) -> tuple[list[JobRow], paging.TimeId | None]:
    """Newest first; keyset paging on (created_at, job_id) so pages never skip or repeat.

    `created`: [from, to) on created_at. Returns the page and the key of its last row when more
    rows follow (None after the last page).
    """
    args: list[object] = []
    where = where_set(
        args,
        ("submitted_by = {}", submitted_by),
        ("status = {}", None if status is None else int(status)),
        ("job_type = {}", job_type or None),
        ("created_at >= {}", created[0]),
        ("created_at < {}", created[1]),
        ("idempotency_key = {}", idempotency_key),
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
    # A workflow step's run moved on (its dependants cancelled, or released: continue_on_failure).
    progress: Progress = field(default_factory=Progress)


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


_LOCK_RUN_OF_WAITING_STEP = f"""
SELECT 1 FROM workflow_runs WHERE run_id = (
    SELECT workflow_run_id FROM jobs WHERE job_id = $1 AND {one_of("status", [JobStatus.WAITING])}
) FOR UPDATE
"""


async def cancel(pool: asyncpg.Pool, job_id: uuid.UUID, reason: str) -> Cancelled:
    """Cancel a job that is not terminal yet; cancelling a cancelled job is a no-op."""
    async with pool.acquire() as conn, conn.transaction():
        # A waiting workflow step is locked after its run, as a release locks it (see
        # store.workflow_progress); every other job row first, then its executions.
        await conn.execute(_LOCK_RUN_OF_WAITING_STEP, job_id)
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
        job = JobRow.from_record(row)
        progress = Progress()
        if job.workflow_run_id is not None:
            progress = await workflow_progress.advance(conn, [job.workflow_run_id])
        return Cancelled(job, stopped, changed=True, progress=progress)


def is_terminal(status: JobStatus) -> bool:
    return status in JOB_TERMINAL
