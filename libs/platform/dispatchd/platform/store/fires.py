"""Firing schedules: exactly one fire per (schedule, fire time), whatever the leaders do.

Invariant: a fire time is fired in one transaction that (1) holds the scheduler fence
(store.fence.check: a deposed leader's transaction is refused), (2) locks the schedule's
row and decides every fire time in (cursor, now] from the cursor it reads under that lock
(catch_up's rules, by the database clock, so every leader uses the same clock),
(3) inserts the fire rows, keyed by (schedule, fire time), and the jobs or workflow runs
(store.workflows.start_run) they start, and (4) moves the cursor to now. Two leaders firing
one schedule at once serialize on the row lock; the second reads the first's cursor and
finds nothing left to fire, and the primary key refuses a duplicate row even so. A new
leader starts from the recorded cursor, so a leader change skips nothing the catch-up
policy would have fired.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform import catch_up
from dispatchd.platform.errors import AlreadyExists, DispatchdError
from dispatchd.platform.states import JOB_ACTIVE, WorkflowRunStatus
from dispatchd.platform.store import fence, submits, workflows
from dispatchd.platform.store.guards import one_of, value
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.platform.store.schedules import ScheduleRow, WorkflowTarget

# Metadata every job a schedule starts carries, naming its schedule and fire time.
SCHEDULE_KEY = "dispatchd.schedule"
FIRE_TIME_KEY = "dispatchd.fire_time"

_DUE = "SELECT schedule_id FROM schedules WHERE NOT paused AND next_fire_at <= clock_timestamp()" \
    " ORDER BY next_fire_at LIMIT $1"
_NEXT = "SELECT EXTRACT(EPOCH FROM min(next_fire_at) - clock_timestamp())::float8 FROM schedules WHERE NOT paused"
_ACTIVE_JOB = f"SELECT EXISTS (SELECT 1 FROM jobs WHERE job_id = $1 AND {one_of('status', JOB_ACTIVE)})"
_ACTIVE_RUN = (
    f"SELECT EXISTS (SELECT 1 FROM workflow_runs WHERE run_id = $1 AND status = {value(WorkflowRunStatus.RUNNING)})"
)
_RECORD = """
INSERT INTO schedule_fires (schedule_id, fire_time, epoch) SELECT $1, t, $3 FROM unnest($2::timestamptz[]) AS t
ON CONFLICT DO NOTHING RETURNING fire_time
"""
_LINK = """
UPDATE schedule_fires f SET job_id = x.job_id, run_id = x.run_id, error = x.error
FROM unnest($2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[]) AS x(fire_time, job_id, run_id, error)
WHERE f.schedule_id = $1 AND f.fire_time = x.fire_time
"""
_ADVANCE = """
UPDATE schedules SET cursor_at = $2, next_fire_at = $3, last_fire_at = COALESCE($4, last_fire_at),
       last_job_id = COALESCE($5, last_job_id), last_run_id = COALESCE($6, last_run_id)
WHERE schedule_id = $1
"""


@dataclass(frozen=True, slots=True)
class Started:
    """What one fire started: a job, a workflow run, or (error) nothing."""

    job_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Fired:
    """What one fire transaction did to one schedule."""

    name: str
    fired: list[tuple[dt.datetime, Started | None]]  # each recorded fire time and what it started (None: skipped)
    queued: list[QueuedRef]  # the new jobs' first executions, to push to Redis after the commit
    dropped: int  # missed fire times the catch-up policy dropped
    next_fire_at: dt.datetime


async def due(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    """Unpaused schedules with a fire time due, most overdue first."""
    return [r["schedule_id"] for r in await conn.fetch(_DUE, limit)]


async def seconds_until_next(conn: asyncpg.Connection | asyncpg.Pool) -> float | None:
    """Seconds until the next fire time of any unpaused schedule (<= 0: due now); None: none."""
    value: float | None = await conn.fetchval(_NEXT)
    return value


def _job(row: ScheduleRow, fire_time: dt.datetime) -> submits.NewJob:
    template = row.definition.job
    metadata = {**template.metadata, SCHEDULE_KEY: row.name, FIRE_TIME_KEY: fire_time.isoformat()}
    return dataclasses.replace(template, metadata=metadata)


async def fire(pool: asyncpg.Pool, schedule_id: uuid.UUID, *, epoch: int | None, grace: dt.timedelta) -> Fired | None:
    """Fire what is due of one schedule (see the module docstring); None if it is gone or paused.

    Raises fence.Fenced, having changed nothing, when a newer leader has opened its term.
    """
    async with pool.acquire() as conn, conn.transaction():
        await fence.check(conn, epoch)
        record = await conn.fetchrow("SELECT *, clock_timestamp() AS now FROM schedules WHERE schedule_id = $1"
                                     " FOR UPDATE", schedule_id)
        if record is None or record["paused"]:
            return None
        row, now = ScheduleRow.from_record(record), record["now"]
        d = row.definition
        plan = catch_up.plan(row.timing, row.cursor_at, now, policy=d.catch_up, limit=d.catch_up_limit, grace=grace)
        rows = await conn.fetch(_RECORD, row.schedule_id, plan.fire, epoch) if plan.fire else []
        recorded = {r["fire_time"] for r in rows}
        previous_active = await _previous_active(conn, row)
        decided = catch_up.starts(len(plan.fire), overlap=d.overlap, previous_active=previous_active)
        starting = [t for t, start in zip(plan.fire, decided, strict=True) if start and t in recorded]
        queued: list[QueuedRef] = []
        if d.workflow is None:
            started = await _start_jobs(conn, row, starting, queued)
        else:
            started = await _start_runs(conn, d.workflow, d.job.submitted_by, starting, queued)
        if started:
            times = list(started)
            await conn.execute(_LINK, row.schedule_id, times, [s.job_id for s in started.values()],
                               [s.run_id for s in started.values()], [s.error for s in started.values()])
        cursor = max(row.cursor_at, now)
        next_fire_at = row.timing.next_after(cursor)
        last_fire = max(recorded) if recorded else None
        last = started[max(started)] if started else Started()
        await conn.execute(_ADVANCE, row.schedule_id, cursor, next_fire_at, last_fire, last.job_id, last.run_id)
    fired = [(t, started.get(t)) for t in plan.fire if t in recorded]
    return Fired(row.name, fired, queued, plan.dropped, next_fire_at)


async def _previous_active(conn: asyncpg.Connection, row: ScheduleRow) -> bool:
    """Whether the job or run the schedule started last is still active (the overlap rule)."""
    if row.definition.workflow is not None:
        return row.last_run_id is not None and bool(await conn.fetchval(_ACTIVE_RUN, row.last_run_id))
    return row.last_job_id is not None and bool(await conn.fetchval(_ACTIVE_JOB, row.last_job_id))


async def _start_jobs(
    conn: asyncpg.Connection, row: ScheduleRow, times: list[dt.datetime], queued: list[QueuedRef]
) -> dict[dt.datetime, Started]:
    """One job per fire time, by one statement (store.submits)."""
    outcomes = await submits.submit_all(conn, [_job(row, t) for t in times]) if times else []
    started: dict[dt.datetime, Started] = {}
    for t, outcome in zip(times, outcomes, strict=True):
        assert not isinstance(outcome, AlreadyExists), "a scheduled job has no idempotency key"
        started[t] = Started(job_id=outcome.job.job_id)
        if outcome.queued is not None:
            queued.append(outcome.queued)
    return started


async def _start_runs(
    conn: asyncpg.Connection,
    workflow: WorkflowTarget,
    submitted_by: str | None,
    times: list[dt.datetime],
    queued: list[QueuedRef],
) -> dict[dt.datetime, Started]:
    """One workflow run per fire time (store.workflows.start_run), each in a savepoint: a run
    that cannot start (its workflow or version is gone) records why, and the schedule goes on."""
    started: dict[dt.datetime, Started] = {}
    for t in times:
        try:
            async with conn.transaction():
                run = await workflows.start_run(
                    conn, name=workflow.name, version=workflow.version, run_input=workflow.input,
                    idempotency_key=None, submitted_by=submitted_by,
                )
        except DispatchdError as exc:
            started[t] = Started(error=str(exc))
            continue
        started[t] = Started(run_id=run.run_id)
        queued.extend(run.queued)
    return started
