"""Dead letters: jobs that failed after their last attempt; list them and redrive them.

A dead letter is a FAILED job whose last execution is DEAD_LETTERED. Redriving one queues
a new attempt and moves the job back to PENDING with a fresh attempt budget: attempt
numbers continue (every earlier execution keeps its row), and `attempt_base` remembers
how many attempts came before, so retries and dead-lettering count from the redrive.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import asyncpg

from dispatchd.platform import paging
from dispatchd.platform.states import (
    JOB_REDRIVE_SOURCE,
    JOB_REDRIVE_TARGET,
    REDRIVE_LAST_EXECUTION,
    ExecutionStatus,
    JobStatus,
    WorkflowRunStatus,
)
from dispatchd.platform.store import workflow_progress
from dispatchd.platform.store.conditions import where_set
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import ExecutionRow, JobRow, QueuedRef
from dispatchd.platform.store.workflow_progress import Progress


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    job_type: str | None = None
    since: dt.datetime | None = None  # dead-lettered at or after
    until: dt.datetime | None = None  # dead-lettered before


@dataclass(frozen=True, slots=True)
class DeadLetter:
    job: JobRow
    execution: ExecutionRow


@dataclass(frozen=True, slots=True)
class Redriven:
    job: JobRow
    queued: QueuedRef
    # A workflow step's run resumed: the steps its failure had cancelled wait again.
    progress: Progress = field(default_factory=Progress)


# A job's last attempt, fetched per job through the (job_id, attempt) unique index.
_LAST = """
CROSS JOIN LATERAL (
    SELECT execution_id, status FROM executions e WHERE e.job_id = j.job_id ORDER BY e.attempt DESC LIMIT 1
) last
"""


_IS_DEAD_LETTER = f"{one_of('j.status', [JOB_REDRIVE_SOURCE])} AND {one_of('last.status', [REDRIVE_LAST_EXECUTION])}"

_REDRIVE_JOB = f"""
UPDATE jobs SET status = {value(JOB_REDRIVE_TARGET)}, attempts = $2 + 1, attempt_base = $2, result = NULL,
       error_message = '', finished_at = NULL, updated_at = clock_timestamp()
WHERE job_id = $1 AND {one_of("status", [JOB_REDRIVE_SOURCE])} RETURNING *
"""

_QUEUE_REDRIVEN = f"""
INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority)
VALUES ($1, $2, $3, {value(ExecutionStatus.QUEUED)}, $4, $5) RETURNING execution_id, available_at
"""


def _where(flt: DeadLetterFilter, args: list[object]) -> list[str]:
    return [
        _IS_DEAD_LETTER,
        *where_set(
            args,
            ("j.job_type = {}", flt.job_type or None),
            ("j.finished_at >= {}", flt.since),
            ("j.finished_at < {}", flt.until),
        ),
    ]


async def list_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool, flt: DeadLetterFilter, *, page_size: int, after: paging.TimeId | None
) -> tuple[list[DeadLetter], paging.TimeId | None]:
    """Newest dead letter first; keyset paging on (finished_at, job_id), the last row's when more follow."""
    args: list[object] = []
    where = _where(flt, args)
    if after is not None:
        args += list(after)
        where.append(f"(j.finished_at, j.job_id) < (${len(args) - 1}, ${len(args)})")
    args.append(page_size + 1)
    rows = await conn.fetch(
        f"SELECT j.*, last.execution_id AS last_execution_id FROM jobs j {_LAST}"
        f" WHERE {' AND '.join(where)} ORDER BY j.finished_at DESC, j.job_id DESC LIMIT ${len(args)}",
        *args,
    )
    last: paging.TimeId | None = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        last = (rows[-1]["finished_at"], rows[-1]["job_id"])
    ids = [r["last_execution_id"] for r in rows]
    found = await conn.fetch("SELECT * FROM executions WHERE execution_id = ANY($1::uuid[])", ids)
    by_id = {r["execution_id"]: ExecutionRow.from_record(r) for r in found}
    letters = [DeadLetter(JobRow.from_record(r), by_id[r["last_execution_id"]]) for r in rows]
    return letters, last


async def matching(conn: asyncpg.Connection | asyncpg.Pool, flt: DeadLetterFilter, limit: int) -> list[uuid.UUID]:
    """Ids of up to `limit` dead letters matching the filter, oldest first."""
    args: list[object] = []
    where = _where(flt, args)
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT j.job_id FROM jobs j {_LAST} WHERE {' AND '.join(where)}"
        f" ORDER BY j.finished_at, j.job_id LIMIT ${len(args)}",
        *args,
    )
    return [r["job_id"] for r in rows]


_LOCK_RUN = "SELECT status FROM workflow_runs WHERE run_id = $1 FOR UPDATE"


async def redrive(pool: asyncpg.Pool, job_id: uuid.UUID) -> Redriven | str:
    """Give one dead-lettered job a new attempt; returns why not (a message) when it is not one."""
    async with pool.acquire() as conn, conn.transaction():
        # Lock order everywhere: the job row first, then its executions.
        locked = await conn.fetchrow("SELECT status, workflow_run_id FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        if locked is None:
            return "job not found"
        status, run_id = locked["status"], locked["workflow_run_id"]
        if status != JOB_REDRIVE_SOURCE:
            return f"job is {JobStatus(status).name.lower()}; only failed (dead-lettered) jobs can be redriven"
        # Then its run (the order `advance` locks in): a cancelled run stays cancelled, so its
        # step would run alone, its dependants never; the run is what to start again.
        if run_id is not None and await conn.fetchval(_LOCK_RUN, run_id) == WorkflowRunStatus.CANCELED:
            return f"its workflow run {run_id} was canceled; start the workflow again instead"
        last = await conn.fetchrow(
            "SELECT attempt, status FROM executions WHERE job_id = $1 ORDER BY attempt DESC LIMIT 1", job_id
        )
        if last is None or last["status"] != REDRIVE_LAST_EXECUTION:
            return "its last attempt was not dead-lettered"
        row = await conn.fetchrow(_REDRIVE_JOB, job_id, last["attempt"])
        assert row is not None  # locked and FAILED
        job = JobRow.from_record(row)
        queued = await conn.fetchrow(
            _QUEUE_REDRIVEN,
            uuid.uuid4(),
            job_id,
            last["attempt"] + 1,
            job.job_type,
            job.priority,
        )
        ref = QueuedRef(queued["execution_id"], job.job_type, job.priority, queued["available_at"])
        if job.workflow_run_id is None:
            return Redriven(job, ref)
        return Redriven(job, ref, await workflow_progress.advance(conn, [job.workflow_run_id]))
