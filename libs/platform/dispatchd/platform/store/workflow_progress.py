"""A workflow run moves on: release the steps whose dependencies are done, cancel the ones a
failure dooms, revive the ones a redrive un-dooms, and settle the run's own status.

Invariants:
- `advance` runs in the transaction that changed a step's job (a success recorded by the
  gateway, a dead letter, a cancel, a redrive), so a released step is due exactly when its
  last dependency's success commits: no polling, and no window in which a crash leaves a
  run stuck. The caller pushes `Progress.queued` to the ready queues after the commit.
- Lock order: the changed step jobs (the caller holds them), then the run rows (FOR UPDATE,
  in run_id order), then the WAITING jobs it releases or cancels. Taking the run row before
  reading the steps serializes two parents finishing at once: the second reads the first's
  committed success, so a step whose last two parents finish together is still released.
- The state is derived from the steps' jobs every time, so `advance` is idempotent. A step
  is done when its job SUCCEEDED, or FAILED/CANCELED with continue_on_failure. A blocking
  step (FAILED/CANCELED otherwise, not itself cancelled by the run) fails the run and dooms
  its descendants: WAITING ones are cancelled and marked `skipped`. A skipped step that
  nothing dooms any more (its failed ancestor was redriven) gets a new WAITING job: a
  cancelled job is never resurrected.
- A released step's payload is its template resolved over the run's input and the results
  of the steps it references (`workflow_templates`); a template that cannot be resolved
  fails the step's job (WAITING -> FAILED), which then blocks like any failure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dispatchd.platform.states import (
    JOB_RELEASE_SOURCE,
    JOB_RELEASE_TARGET,
    JOB_TERMINAL,
    ExecutionStatus,
    JobStatus,
    WorkflowRunStatus,
    run_sources,
)
from dispatchd.platform.store.guards import checked, one_of, value
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.platform.workflow_templates import TemplateError, decode, resolve

_UNSUCCESSFUL = frozenset({JobStatus.FAILED, JobStatus.CANCELED})
_ADVANCING = frozenset({WorkflowRunStatus.RUNNING, WorkflowRunStatus.FAILED})


@dataclass(slots=True)
class Progress:
    """What an advance did that Redis must hear of after the commit."""

    queued: list[QueuedRef] = field(default_factory=list)
    ended: list[tuple[uuid.UUID, JobStatus]] = field(default_factory=list)

    def __iadd__(self, other: Progress) -> Progress:
        self.queued += other.queued
        self.ended += other.ended
        return self


@dataclass(frozen=True, slots=True)
class _Step:
    step_id: str
    job_id: uuid.UUID
    depends_on: list[str]
    continue_on_failure: bool
    skipped: bool
    template: Any
    status: JobStatus
    result: bytes | None
    error_message: str

    @property
    def done(self) -> bool:
        return self.status is JobStatus.SUCCEEDED or (self.status in _UNSUCCESSFUL and self.continue_on_failure)

    @property
    def blocking(self) -> bool:
        return self.status in _UNSUCCESSFUL and not self.continue_on_failure and not self.skipped


# The runs, locked in run_id order (rows are locked as the sort returns them). A statement
# apart from the steps' snapshot, which must see what the lock waited for.
_LOCK_RUNS = "SELECT run_id, status, input FROM workflow_runs WHERE run_id = ANY($1::uuid[]) ORDER BY run_id FOR UPDATE"
_LOCK_RUNS_OF_JOBS = """
SELECT run_id, status, input FROM workflow_runs
WHERE run_id IN (SELECT workflow_run_id FROM jobs WHERE job_id = ANY($1::uuid[])) ORDER BY run_id FOR UPDATE
"""
_STEPS = """
SELECT s.step_id, s.job_id, s.depends_on, s.continue_on_failure, s.skipped, s.payload_template,
       j.status, j.result, j.error_message
FROM workflow_steps s JOIN jobs j ON j.job_id = s.job_id WHERE s.run_id = $1 ORDER BY s.position
"""

_RELEASE = f"""
WITH r AS (
    UPDATE jobs SET status = {value(JOB_RELEASE_TARGET)}, payload = i.payload, updated_at = clock_timestamp()
    FROM unnest($1::uuid[], $2::bytea[]) AS i(job_id, payload)
    WHERE jobs.job_id = i.job_id AND {checked("jobs.status", [JOB_RELEASE_SOURCE])}
    RETURNING jobs.job_id, jobs.job_type, jobs.priority
), s AS (
    UPDATE workflow_steps SET released_at = clock_timestamp() FROM r WHERE workflow_steps.job_id = r.job_id
)
INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority)
SELECT gen_random_uuid(), r.job_id, 1, {value(ExecutionStatus.QUEUED)}, r.job_type, r.priority FROM r
RETURNING execution_id, job_type, priority, available_at
"""

# WAITING -> CANCELED (a dependency failed) or FAILED (the template did not resolve).
_END_WAITING = f"""
WITH c AS (
    UPDATE jobs SET status = $2, error_message = i.error, finished_at = clock_timestamp(),
           updated_at = clock_timestamp()
    FROM unnest($1::uuid[], $3::text[]) AS i(job_id, error)
    WHERE jobs.job_id = i.job_id AND {checked("jobs.status", [JobStatus.WAITING])}
    RETURNING jobs.job_id
)
UPDATE workflow_steps SET skipped = $4 FROM c WHERE workflow_steps.job_id = c.job_id
"""

# A new WAITING job with the old one's spec; the old (cancelled) job keeps its row.
_REVIVE = f"""
WITH n AS (
    INSERT INTO jobs (job_id, job_type, payload, status, priority, metadata, max_attempts, initial_backoff_ms,
                      max_backoff_ms, retry_policy_set, execution_timeout_ms, submitted_by, workflow_run_id)
    SELECT $2, job_type, ''::bytea, {value(JobStatus.WAITING)}, priority, metadata, max_attempts,
           initial_backoff_ms, max_backoff_ms, retry_policy_set, execution_timeout_ms, submitted_by, workflow_run_id
    FROM jobs WHERE job_id = $1
    RETURNING job_id
)
UPDATE workflow_steps SET job_id = n.job_id, skipped = false, released_at = NULL FROM n
WHERE workflow_steps.job_id = $1
"""


def _run_update(target: WorkflowRunStatus, finished: bool) -> str:
    ends = "clock_timestamp()" if finished else "NULL"
    return f"""
UPDATE workflow_runs SET status = {value(target)}, error_message = $2, finished_at = {ends},
       updated_at = clock_timestamp()
WHERE run_id = $1 AND {one_of("status", run_sources(target))}
"""


_RUN_TO = {
    WorkflowRunStatus.SUCCEEDED: _run_update(WorkflowRunStatus.SUCCEEDED, True),
    WorkflowRunStatus.FAILED: _run_update(WorkflowRunStatus.FAILED, True),
    WorkflowRunStatus.RUNNING: _run_update(WorkflowRunStatus.RUNNING, False),
}


async def advance_jobs(conn: asyncpg.Connection, job_ids: Iterable[uuid.UUID]) -> Progress:
    """`advance` the runs of these jobs (those that are workflow steps)."""
    return await _advance_locked(conn, await conn.fetch(_LOCK_RUNS_OF_JOBS, list(job_ids)))


async def advance(conn: asyncpg.Connection, run_ids: Iterable[uuid.UUID]) -> Progress:
    return await _advance_locked(conn, await conn.fetch(_LOCK_RUNS, list(set(run_ids))))


async def _advance_locked(conn: asyncpg.Connection, runs: list[asyncpg.Record]) -> Progress:
    progress = Progress()
    for run in runs:
        # A cancelled run releases nothing (CancelWorkflowRun ends its steps); a succeeded one has none left.
        if WorkflowRunStatus(run["status"]) in _ADVANCING:
            progress += await _advance_run(conn, run)
    return progress


def _doomed(steps: list[_Step]) -> set[str]:
    """Every step downstream of a blocking one."""
    doomed: set[str] = set()
    frontier = {s.step_id for s in steps if s.blocking}
    while frontier:
        frontier = {s.step_id for s in steps if frontier.intersection(s.depends_on)} - doomed
        doomed |= frontier
    return doomed


async def _snapshot(conn: asyncpg.Connection, run_id: uuid.UUID) -> list[_Step]:
    return [
        _Step(
            r["step_id"],
            r["job_id"],
            list(r["depends_on"]),
            r["continue_on_failure"],
            r["skipped"],
            r["payload_template"],
            JobStatus(r["status"]),
            r["result"],
            r["error_message"],
        )
        for r in await conn.fetch(_STEPS, run_id)
    ]


def _payload(step: _Step, run_input: Any, by_id: dict[str, _Step]) -> bytes:
    results = {s.step_id: decode(s.result) for s in by_id.values() if s.status in JOB_TERMINAL}
    return json.dumps(resolve(step.template, run_input, results)).encode()


async def _advance_run(conn: asyncpg.Connection, run: asyncpg.Record) -> Progress:
    """One locked run, RUNNING or FAILED, moves on."""
    run_id: uuid.UUID = run["run_id"]
    progress = Progress()
    while True:  # a round that ends a step (cancel, bad template) or revives one looks again
        steps = await _snapshot(conn, run_id)
        by_id = {s.step_id: s for s in steps}
        doomed = _doomed(steps)
        cancel = [s.job_id for s in steps if s.step_id in doomed and s.status is JobStatus.WAITING]
        revive = [s.job_id for s in steps if s.skipped and s.step_id not in doomed and s.status is JobStatus.CANCELED]
        ready = [
            s
            for s in steps
            if s.status is JobStatus.WAITING and s.step_id not in doomed and all(by_id[p].done for p in s.depends_on)
        ]
        released: list[tuple[uuid.UUID, bytes]] = []
        broken: list[tuple[uuid.UUID, str]] = []
        for step in ready:
            try:
                released.append((step.job_id, _payload(step, decode(run["input"]), by_id)))
            except TemplateError as exc:
                broken.append((step.job_id, f"payload template: {exc}"))
        if cancel:
            await conn.execute(
                _END_WAITING, cancel, int(JobStatus.CANCELED), ["a dependency failed"] * len(cancel), True
            )
            progress.ended += [(job_id, JobStatus.CANCELED) for job_id in cancel]
        if broken:
            await conn.execute(
                _END_WAITING, [b[0] for b in broken], int(JobStatus.FAILED), [b[1] for b in broken], False
            )
            progress.ended += [(job_id, JobStatus.FAILED) for job_id, _ in broken]
        for old in revive:
            await conn.execute(_REVIVE, old, uuid.uuid4())
        if released:
            rows = await conn.fetch(_RELEASE, [r[0] for r in released], [r[1] for r in released])
            progress.queued += [
                QueuedRef(r["execution_id"], r["job_type"], r["priority"], r["available_at"]) for r in rows
            ]
        if not (cancel or broken or revive):
            break
    await _settle_run(conn, run_id, WorkflowRunStatus(run["status"]), steps, released)
    return progress


async def _settle_run(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    status: WorkflowRunStatus,
    steps: list[_Step],
    released: list[tuple[uuid.UUID, bytes]],
) -> None:
    """The run's status from its steps (as read in the last round, plus what it released)."""
    blocking = [s for s in steps if s.blocking]
    if blocking:
        first = blocking[0]
        why = "was cancelled" if first.status is JobStatus.CANCELED else "failed"
        target, error = WorkflowRunStatus.FAILED, f"step {first.step_id!r} {why}: {first.error_message}"
    else:
        just_released = {job_id for job_id, _ in released}
        finished = all(s.status in JOB_TERMINAL and s.job_id not in just_released for s in steps)
        target, error = (WorkflowRunStatus.SUCCEEDED if finished else WorkflowRunStatus.RUNNING), ""
    if target is not status:
        await conn.execute(_RUN_TO[target], run_id, error)
