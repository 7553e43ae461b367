"""Workflow runs: read one (with its steps' jobs), list them, cancel one.

Invariant: cancelling a run never holds a running step's job lock together with the run's:
the run becomes CANCELED and its WAITING steps are cancelled in one transaction (run row,
then the waiting jobs: the order a release takes), and each step that has an attempt is
then cancelled in a transaction of its own (`jobs.cancel`, job row first), which a
cancelled run's `advance` leaves alone. Cancelling again finishes what a crash between
the two left active.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform import paging
from dispatchd.platform.errors import FailedPrecondition, NotFound
from dispatchd.platform.states import JobStatus, WorkflowRunStatus, run_sources
from dispatchd.platform.store import jobs
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import one_of, value


@dataclass(frozen=True, slots=True)
class StepRow:
    step_id: str
    job_id: uuid.UUID
    job_type: str
    status: JobStatus
    attempts: int
    depends_on: list[str]
    created_at: dt.datetime
    released_at: dt.datetime | None
    finished_at: dt.datetime | None
    error_message: str
    result: bytes | None


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: uuid.UUID
    workflow_name: str
    workflow_version: int
    status: WorkflowRunStatus
    input: bytes
    idempotency_key: str | None
    submitted_by: str | None
    error_message: str
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    steps: tuple[StepRow, ...] = ()


_RUN_COLUMNS = (
    "run_id, workflow_name, workflow_version, status, input, idempotency_key, submitted_by, error_message,"
    " created_at, updated_at, finished_at"
)

# A step's attempts are its executions: none while it waits (or if it was cancelled waiting),
# though its job row counts the first attempt from creation as a submitted job's does.
_STEPS = """
SELECT s.step_id, s.job_id, j.job_type, j.status, s.depends_on, j.created_at, s.released_at,
       (SELECT count(*) FROM executions e WHERE e.job_id = j.job_id)::int AS attempts,
       j.finished_at, j.error_message, j.result
FROM workflow_steps s JOIN jobs j ON j.job_id = s.job_id WHERE s.run_id = $1 ORDER BY s.position
"""


def _run(r: asyncpg.Record, steps: tuple[StepRow, ...] = ()) -> RunRow:
    return RunRow(
        **{k: r[k] for k in _RUN_COLUMNS.replace(" ", "").split(",") if k != "status"},
        status=WorkflowRunStatus(r["status"]),
        steps=steps,
    )


def _step(r: asyncpg.Record) -> StepRow:
    return StepRow(**{**dict(r.items()), "status": JobStatus(r["status"]), "depends_on": list(r["depends_on"])})


async def get_run(conn: asyncpg.Connection | asyncpg.Pool, run_id: uuid.UUID) -> RunRow:
    row = await conn.fetchrow(f"SELECT {_RUN_COLUMNS} FROM workflow_runs WHERE run_id = $1", run_id)
    if row is None:
        raise NotFound(f"workflow run {run_id} not found")
    return _run(row, tuple(_step(r) for r in await conn.fetch(_STEPS, run_id)))


async def list_runs(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    workflow_name: str | None,
    status: WorkflowRunStatus | None,
    page_size: int,
    after: paging.TimeId | None,
    submitted_by: str | None = None,
) -> tuple[list[RunRow], paging.TimeId | None]:
    """Newest first, keyset paging on (created_at, run_id); the last row's key when more follow."""
    args: list[object] = []
    where = where_set(
        args,
        ("submitted_by = {}", submitted_by),
        ("workflow_name = {}", workflow_name),
        ("status = {}", None if status is None else int(status)),
    )
    if after is not None:
        args += list(after)
        where.append(f"(created_at, run_id) < (${len(args) - 1}, ${len(args)})")
    args.append(page_size + 1)
    rows = await conn.fetch(
        f"SELECT {_RUN_COLUMNS} FROM workflow_runs"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY created_at DESC, run_id DESC LIMIT ${len(args)}",
        *args,
    )
    runs = [_run(r) for r in rows]
    if len(runs) <= page_size:
        return runs, None
    runs = runs[:page_size]
    return runs, (runs[-1].created_at, runs[-1].run_id)


_CANCEL_RUN = f"""
UPDATE workflow_runs SET status = {value(WorkflowRunStatus.CANCELED)}, error_message = $2,
       finished_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE run_id = $1 AND {one_of("status", run_sources(WorkflowRunStatus.CANCELED))}
"""

_CANCEL_WAITING = f"""
UPDATE jobs SET status = {value(JobStatus.CANCELED)}, error_message = $2, finished_at = clock_timestamp(),
       updated_at = clock_timestamp()
WHERE workflow_run_id = $1 AND {one_of("status", [JobStatus.WAITING])}
RETURNING job_id
"""

_WITH_ATTEMPTS = f"""
SELECT job_id FROM jobs
WHERE workflow_run_id = $1 AND {one_of("status", [JobStatus.PENDING, JobStatus.DISPATCHING, JobStatus.RUNNING])}
ORDER BY job_id
"""


@dataclass(frozen=True, slots=True)
class CancelledRun:
    run: RunRow
    waiting: list[uuid.UUID]  # steps cancelled before they had an attempt
    cancelled: list[jobs.Cancelled]  # steps cancelled with their attempts


async def cancel_run(pool: asyncpg.Pool, run_id: uuid.UUID, reason: str) -> CancelledRun:
    """Cancel a run that has not succeeded, and every step still active (idempotent)."""
    reason = reason or "workflow run cancelled"
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM workflow_runs WHERE run_id = $1 FOR UPDATE", run_id)
        if status is None:
            raise NotFound(f"workflow run {run_id} not found")
        if WorkflowRunStatus(status) is WorkflowRunStatus.SUCCEEDED:
            raise FailedPrecondition(f"workflow run {run_id} already succeeded; it cannot be cancelled")
        await conn.execute(_CANCEL_RUN, run_id, reason)
        waiting = [r["job_id"] for r in await conn.fetch(_CANCEL_WAITING, run_id, reason)]
    cancelled = []
    for row in await pool.fetch(_WITH_ATTEMPTS, run_id):
        try:
            cancelled.append(await jobs.cancel(pool, row["job_id"], reason))
        except FailedPrecondition:  # it finished in the meantime: nothing to stop
            continue
    return CancelledRun(await get_run(pool, run_id), waiting, cancelled)
