"""What workers report, applied for many executions at once: start notices and results.

Invariant: one call runs inside the caller's transaction and takes its locks in the order
of `store.executions` (every job row of the batch in job_id order, then every execution
row in execution_id order) before it changes anything, so a batch cannot deadlock with a
claim, a cancel, a repair or a lease renewal. Each report keeps the guard it has when
applied alone: a start needs the claiming stream and a CLAIMED execution; a result needs
the owning stream (and, when it carries one, the current claim token) and an owned
execution. A report that does not match changes nothing and comes back not applied.
Successes and starts are set-based statements over unnest arrays; failures, which may
queue a retry or dead-letter, take the per-row path of `store.executions` (rare). Successes
of workflow steps (`Finished.step`, known from the claim) then advance their runs in the
same transaction (`store.workflow_progress`); a batch without steps runs nothing more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from dispatchd.platform.job_events import JobEvent, Kind
from dispatchd.platform.states import (
    EXECUTION_SETTLEABLE,
    EXECUTION_STARTABLE,
    JOB_STARTABLE,
    JOB_SUCCEEDABLE,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store import workflow_progress
from dispatchd.platform.store.executions import Owner, fail_locked
from dispatchd.platform.store.guards import checked, value
from dispatchd.platform.store.rows import Settlement


@dataclass(frozen=True, slots=True)
class Started:
    """A start notice from the stream `session_id`."""

    execution_id: uuid.UUID
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Finished:
    """A result from the stream of `worker_id`/`session_id`; `claim_token` is checked when set."""

    execution_id: uuid.UUID
    worker_id: str
    session_id: uuid.UUID
    success: bool
    result: bytes | None
    error: str = ""
    claim_token: uuid.UUID | None = None
    # A workflow step (the gateway knows from its claim): its success advances the run.
    step: bool = False

    @property
    def owner(self) -> Owner:
        return Owner(worker_id=self.worker_id, session_id=self.session_id, claim_token=self.claim_token)


# The job rows first (job_id order), then the executions (execution_id order): the sort in
# `l` consumes every row of `j` (locking it) before the first execution is locked.
_LOCKS = """
j AS (
    SELECT job_id FROM jobs
    WHERE job_id IN (SELECT job_id FROM executions WHERE execution_id = ANY($1::uuid[]))
    ORDER BY job_id FOR UPDATE
), l AS (
    SELECT e.execution_id, e.job_id FROM executions e JOIN j ON j.job_id = e.job_id
    WHERE e.execution_id = ANY($1::uuid[])
    ORDER BY e.execution_id FOR UPDATE OF e
)"""

_LOCK = f"WITH {_LOCKS}\nSELECT execution_id, job_id FROM l"

_START = f"""
WITH now AS (SELECT clock_timestamp() AS at),  -- one reading: deadline = start + timeout exactly
s AS (
    UPDATE executions e SET status = {value(ExecutionStatus.RUNNING)}, started_at = now.at,
           deadline_at = now.at + make_interval(secs => j.execution_timeout_ms::float8 / 1000)
    FROM now, unnest($1::uuid[], $2::uuid[]) AS i(execution_id, session_id), jobs j
    WHERE e.execution_id = i.execution_id AND e.session_id = i.session_id AND j.job_id = e.job_id
      AND {checked("e.status", EXECUTION_STARTABLE)}
    RETURNING e.execution_id, e.job_id, e.job_type, e.attempt
), u AS (
    UPDATE jobs SET status = {value(JobStatus.RUNNING)}, updated_at = clock_timestamp()
    FROM s WHERE jobs.job_id = s.job_id AND {checked("jobs.status", JOB_STARTABLE)}
)
SELECT execution_id, job_id, job_type, attempt FROM s
"""


def _success_ctes(locked: bool) -> str:
    """`d`: the successes applied (`locked`: only rows `l` locked), `u`: their jobs.

    A start never recorded (none sent, or folded into this result) counts from the claim.
    """
    from_locked, where_locked = ("l, ", "e.execution_id = l.execution_id AND ") if locked else ("", "")
    return f"""d AS (
    UPDATE executions e SET status = {value(ExecutionStatus.SUCCEEDED)}, result = i.result, error_message = '',
           lease_expires_at = NULL, finished_at = clock_timestamp(), started_at = COALESCE(e.started_at, e.claimed_at)
    FROM {from_locked}unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::bytea[])
         AS i(execution_id, worker_id, session_id, claim_token, result)
    WHERE {where_locked}e.execution_id = i.execution_id AND e.worker_id = i.worker_id AND e.session_id = i.session_id
      AND (i.claim_token IS NULL OR e.claim_token = i.claim_token) AND {checked("e.status", EXECUTION_SETTLEABLE)}
    RETURNING e.execution_id, e.job_id, e.worker_id, e.job_type, i.result
), u AS (
    UPDATE jobs SET status = {value(JobStatus.SUCCEEDED)}, result = d.result, error_message = '',
           finished_at = clock_timestamp(), updated_at = clock_timestamp()
    FROM d WHERE jobs.job_id = d.job_id AND {checked("jobs.status", JOB_SUCCEEDABLE)}
    RETURNING jobs.job_id, EXTRACT(EPOCH FROM clock_timestamp() - jobs.created_at)::float8 AS age_seconds
)"""


_SUCCEED = f"""
WITH {_success_ctes(locked=False)}
SELECT d.execution_id, d.job_id, d.worker_id, d.job_type, u.age_seconds FROM d LEFT JOIN u ON u.job_id = d.job_id
"""

# `_LOCK` and `_SUCCEED` in one statement that commits on its own (no BEGIN/COMMIT round
# trips), for a batch of successes alone: `d` writes only rows `l` locked, so the locks are
# taken in `_LOCK`'s order. Every locked execution comes back, applied or not.
_LOCK_AND_SUCCEED = f"""
WITH {_LOCKS}, {_success_ctes(locked=True)}
SELECT l.execution_id, l.job_id, d.worker_id, d.job_type, d.execution_id IS NOT NULL AS applied, u.age_seconds
FROM l LEFT JOIN d ON d.execution_id = l.execution_id LEFT JOIN u ON u.job_id = d.job_id
"""


def _success_arrays(successes: Sequence[Finished]) -> list[list[Any]]:
    return [
        [f.execution_id for f in successes],
        [f.worker_id for f in successes],
        [f.session_id for f in successes],
        [f.claim_token for f in successes],
        [f.result for f in successes],
    ]


def _succeeded(r: asyncpg.Record) -> Settlement:
    return Settlement(
        applied=True,
        job_id=r["job_id"],
        job_status=JobStatus.SUCCEEDED,
        execution_id=r["execution_id"],
        worker_id=r["worker_id"],
        job_type=r["job_type"],
        job_age_seconds=r["age_seconds"],
    )


async def succeed_all(conn: asyncpg.Connection, finished: Sequence[Finished]) -> list[Settlement]:
    """`apply` for successful results alone, in one statement that commits on its own (no
    transaction around it): each result's Settlement, under the same locks and guards."""
    rows = {r["execution_id"]: r for r in await conn.fetch(_LOCK_AND_SUCCEED, *_success_arrays(finished))}
    settlements = []
    for f in finished:
        r = rows.get(f.execution_id)
        if r is not None and r["applied"]:
            settlements.append(_succeeded(r))
        else:
            settlements.append(Settlement(applied=False, job_id=None if r is None else r["job_id"]))
    return settlements


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply` did: whether each start applied (and their events), each result's Settlement."""

    ran: list[bool]
    settlements: list[Settlement]
    began: list[JobEvent]


async def apply(conn: asyncpg.Connection, started: Sequence[Started], finished: Sequence[Finished]) -> Applied:
    """Apply the reports in the caller's transaction.

    An execution appears at most once in `finished` (a second result would see the first's
    effect only in a later statement).
    """
    ids = [s.execution_id for s in started] + [f.execution_id for f in finished]
    job_of = {r["execution_id"]: r["job_id"] for r in await conn.fetch(_LOCK, ids)}
    ran: set[uuid.UUID] = set()
    began: list[JobEvent] = []
    if started:
        rows = await conn.fetch(_START, [s.execution_id for s in started], [s.session_id for s in started])
        ran = {r["execution_id"] for r in rows}
        began = [
            JobEvent(str(r["job_id"]), r["job_type"], Kind.STARTED, int(JobStatus.RUNNING), r["attempt"]) for r in rows
        ]
    successes = [f for f in finished if f.success]
    done: dict[uuid.UUID, Settlement] = {}
    if successes:
        for r in await conn.fetch(_SUCCEED, *_success_arrays(successes)):
            done[r["execution_id"]] = _succeeded(r)
    steps = [f.execution_id for f in successes if f.step and f.execution_id in done]
    if steps:
        # Same transaction as the successes: each dependant is due once the last parent commits.
        progress = await workflow_progress.advance_jobs(conn, [j for e in steps if (j := done[e].job_id) is not None])
        done[steps[0]] = replace(done[steps[0]], released=tuple(progress.queued), ended=tuple(progress.ended))
    settlements = []
    for f in finished:
        if not f.success:
            settlements.append(await fail_locked(conn, f.execution_id, f.owner, f.error, f.result))
        else:
            settlements.append(done.get(f.execution_id) or Settlement(applied=False, job_id=job_of.get(f.execution_id)))
    return Applied([s.execution_id in ran for s in started], settlements, began)
