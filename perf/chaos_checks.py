"""What must hold after a chaos run, checked against Postgres (the source of truth).

Reads only the documented columns of `jobs` and `executions`, plus what the clients were
told (receipts) and what the handlers really ran (the ledger of perf.chaos_handlers).
Each check yields its violations; a run passes when none has any.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.states import ExecutionStatus as E
from dispatchd.platform.states import JobStatus as J
from dispatchd.platform.store.guards import one_of
from perf.chaos_handlers import Entry
from perf.chaos_load import JobSpec, Receipts

# Errors the handlers raise on purpose; any other failure of an attempt came from the
# infrastructure (a lost worker, an expired lease, a restart ...).
HANDLER_ERRORS = ("flaky failure on attempt", "builtin.fail always fails")
MAX_EXAMPLES = 10
CLOCK_SLACK = dt.timedelta(milliseconds=1)


@dataclass
class Check:
    name: str
    violations: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.violations.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.violations,
            "violations": len(self.violations),
            "examples": self.violations[:MAX_EXAMPLES],
        }


@dataclass(frozen=True)
class Snapshot:
    jobs: dict[str, asyncpg.Record]  # job id -> row
    executions: dict[str, list[asyncpg.Record]]  # job id -> rows by attempt

    @classmethod
    async def load(cls, pool: asyncpg.Pool) -> Snapshot:
        jobs = await pool.fetch(
            "SELECT job_id, idempotency_key, job_type, payload, status, attempts, result, error_message,"
            " finished_at FROM jobs"
        )
        rows = await pool.fetch(
            "SELECT job_id, execution_id, attempt, status, worker_id, error_message, queued_at, claimed_at,"
            " started_at, finished_at FROM executions ORDER BY job_id, attempt"
        )
        executions: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            executions[str(row["job_id"])].append(row)
        return cls({str(r["job_id"]): r for r in jobs}, dict(executions))

    @staticmethod
    async def count_active(pool: asyncpg.Pool) -> int:
        return int(await pool.fetchval(f"SELECT count(*) FROM jobs WHERE NOT {one_of('status', JOB_TERMINAL)}"))


class TerminalWatch:
    """Samples the terminal jobs while the chaos runs: a terminal state seen once must never change."""

    def __init__(self, database_url: str, every: float = 2.0) -> None:
        self.database_url = database_url
        self.every = every
        self.seen: dict[str, tuple[int, dt.datetime]] = {}
        self.samples = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # Postgres may be down right now: sample later
                await self._sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    async def _sample(self) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url), timeout=2)
        try:
            rows = await conn.fetch(
                f"SELECT job_id, status, finished_at FROM jobs WHERE {one_of('status', JOB_TERMINAL)}",
                timeout=5,
            )
        finally:
            await conn.close(timeout=2)
        for row in rows:
            self.seen.setdefault(str(row["job_id"]), (row["status"], row["finished_at"]))
        self.samples += 1

    def check(self, snap: Snapshot) -> Check:
        check = Check("terminal_states_final")
        if self.samples == 0:
            check.fail("no sample of terminal jobs could be taken during the run")
        for job_id, (status, finished_at) in self.seen.items():
            job = snap.jobs[job_id]
            if job["status"] != status or job["finished_at"] != finished_at:
                check.fail(
                    f"job {job_id} was {J(status).name} (finished {finished_at}), later "
                    f"{J(job['status']).name} (finished {job['finished_at']})"
                )
        return check


def is_handler_error(message: str) -> bool:
    return any(text in message for text in HANDLER_ERRORS)


def check_all(specs: list[JobSpec], receipts: Receipts, snap: Snapshot, ledger: list[Entry]) -> list[Check]:
    checks = [
        _all_terminal(snap),
        _none_lost(specs, receipts, snap),
        _none_resurrected(receipts, snap),
        _history(snap),
        _outcomes(specs, receipts, snap),
        _ledger_backs_successes(snap, ledger),
    ]
    return checks


def _all_terminal(snap: Snapshot) -> Check:
    check = Check("every_job_terminal")
    for job_id, job in snap.jobs.items():
        if J(job["status"]) not in (J.SUCCEEDED, J.FAILED, J.CANCELED):
            states = [(e["attempt"], E(e["status"]).name, e["worker_id"]) for e in snap.executions.get(job_id, [])]
            check.fail(f"job {job_id} ({job['job_type']}) is {J(job['status']).name}; executions {states}")
    return check


def _none_lost(specs: list[JobSpec], receipts: Receipts, snap: Snapshot) -> Check:
    check = Check("none_lost_or_doubled")
    by_key: dict[str, list[str]] = defaultdict(list)
    for job_id, job in snap.jobs.items():
        by_key[job["idempotency_key"] or ""].append(job_id)
    for key, job_id in receipts.acknowledged.items():
        found = by_key.get(key, [])
        if found != [job_id]:
            check.fail(f"key {key}: acknowledged as job {job_id}, Postgres has {found}")
    known = {s.key for s in specs}
    for key, ids in by_key.items():
        if key not in known:
            check.fail(f"jobs {ids} with key {key!r} were never submitted")
        elif len(ids) > 1:
            check.fail(f"key {key} maps to {len(ids)} jobs: {ids}")
    for text in receipts.conflicts:
        check.fail(f"submit retry refused: {text}")
    return check


def _none_resurrected(receipts: Receipts, snap: Snapshot) -> Check:
    check = Check("none_resurrected")
    for job_id, told in receipts.cancelled.items():
        job = snap.jobs.get(job_id)
        if job is None:
            check.fail(f"cancelled job {job_id} is missing")
            continue
        if J(job["status"]) is not J.CANCELED:
            check.fail(f"job {job_id} was cancelled but ended {J(job['status']).name}")
        elif job["finished_at"] is None or abs(job["finished_at"] - told.finished_at) > CLOCK_SLACK:
            check.fail(f"job {job_id}: finished_at changed from {told.finished_at} to {job['finished_at']}")
        if any(E(e["status"]) is E.SUCCEEDED for e in snap.executions.get(job_id, [])):
            check.fail(f"cancelled job {job_id} has a SUCCEEDED execution")
    for job_id, job in snap.jobs.items():
        finished = job["finished_at"]
        if finished is None:
            continue
        for e in snap.executions.get(job_id, []):
            late = [c for c in ("queued_at", "claimed_at", "started_at") if e[c] is not None and e[c] > finished]
            if late:
                check.fail(f"job {job_id} attempt {e['attempt']}: {', '.join(late)} after the job finished")
    return check


_LAST_FOR = {J.SUCCEEDED: E.SUCCEEDED, J.FAILED: E.DEAD_LETTERED, J.CANCELED: E.CANCELED}
_ACTIVE = (E.QUEUED, E.CLAIMED, E.RUNNING)


def _history(snap: Snapshot) -> Check:
    """Attempts match the execution rows: 1..n, all but the last failed, the last tells the outcome."""
    check = Check("attempts_match_history")
    for job_id, job in snap.jobs.items():
        rows = snap.executions.get(job_id, [])
        attempts = [e["attempt"] for e in rows]
        if attempts != list(range(1, len(rows) + 1)):
            check.fail(f"job {job_id}: attempt numbers {attempts} are not 1..{len(rows)}")
        if job["attempts"] != len(rows):
            check.fail(f"job {job_id}: job.attempts={job['attempts']} but {len(rows)} execution rows")
        statuses = [E(e["status"]) for e in rows]
        if sum(s in _ACTIVE for s in statuses) > 1:
            check.fail(f"job {job_id}: several active executions {[s.name for s in statuses]}")
        if statuses.count(E.SUCCEEDED) > 1:
            check.fail(f"job {job_id}: {statuses.count(E.SUCCEEDED)} SUCCEEDED executions")
        if any(s is not E.FAILED for s in statuses[:-1]):
            check.fail(f"job {job_id}: an earlier attempt did not end FAILED: {[s.name for s in statuses]}")
        status = J(job["status"])
        if status in _LAST_FOR and statuses and statuses[-1] is not _LAST_FOR[status]:
            check.fail(f"job {job_id} is {status.name} but its last execution is {statuses[-1].name}")
    return check


def _outcomes(specs: list[JobSpec], receipts: Receipts, snap: Snapshot) -> Check:
    """Per job type, what each may end as; a quick job may fail only if the chaos ate its attempts."""
    check = Check("expected_outcomes")
    for spec in specs:
        job_id = receipts.acknowledged.get(spec.key)
        job = snap.jobs.get(job_id or "")
        if job is None:
            continue
        status = J(job["status"])
        rows = snap.executions.get(job_id or "", [])
        if spec.job_type == "builtin.fail":
            if status is J.SUCCEEDED:
                check.fail(f"job {job_id} (builtin.fail) SUCCEEDED")
            continue
        ended = [e["error_message"] for e in rows if E(e["status"]) in (E.FAILED, E.DEAD_LETTERED)]
        if status is J.FAILED and all(is_handler_error(message) for message in ended):
            check.fail(f"job {job_id} ({spec.job_type}) FAILED with only handler errors: {job['error_message']!r}")
        if status is not J.SUCCEEDED:
            continue
        winner = next((e for e in rows if E(e["status"]) is E.SUCCEEDED), None)
        if winner is not None and winner["attempt"] <= spec.planned_failures:
            check.fail(f"job {job_id} ({spec.job_type}) succeeded on attempt {winner['attempt']}, planned to fail it")
        if spec.job_type == "builtin.echo" and bytes(job["result"] or b"") != spec.payload:
            check.fail(f"job {job_id}: result {job['result']!r} is not its payload {spec.payload!r}")
    return check


def _ledger_backs_successes(snap: Snapshot, ledger: list[Entry]) -> Check:
    """Every SUCCEEDED execution was really run to completion by a handler."""
    check = Check("successes_were_really_run")
    done = {e.execution_id for e in ledger if e.event == "done"}
    for job_id, rows in snap.executions.items():
        for e in rows:
            if E(e["status"]) is E.SUCCEEDED and str(e["execution_id"]) not in done:
                check.fail(f"job {job_id} attempt {e['attempt']}: SUCCEEDED but no handler completed it")
    return check


def statistics(specs: list[JobSpec], receipts: Receipts, snap: Snapshot, ledger: list[Entry]) -> dict[str, Any]:
    """Figures for the evidence: outcomes by type, duplicates, why attempts were lost."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    type_of = {s.key: s.job_type for s in specs}
    for job in snap.jobs.values():
        by_type[type_of.get(job["idempotency_key"] or "", job["job_type"])][J(job["status"]).name] += 1
    lost_reasons: Counter[str] = Counter()
    started_then_lost = 0
    failed_quick_jobs: Counter[str] = Counter()
    for job_id, rows in snap.executions.items():
        for e in rows:
            if E(e["status"]) in (E.FAILED, E.DEAD_LETTERED) and not is_handler_error(e["error_message"]):
                lost_reasons[e["error_message"][:80]] += 1
                started_then_lost += e["started_at"] is not None
        job = snap.jobs[job_id]
        if J(job["status"]) is J.FAILED and job["job_type"] != "builtin.fail":
            failed_quick_jobs[job["job_type"]] += 1
    completions: Counter[str] = Counter(e.job_id for e in ledger if e.event == "done")
    starts: Counter[str] = Counter(e.job_id for e in ledger if e.event == "start")
    executions = sum(len(rows) for rows in snap.executions.values())
    return {
        "jobs_by_type_and_status": {t: dict(sorted(c.items())) for t, c in sorted(by_type.items())},
        "executions": executions,
        "duplicates": {
            # A handler ran to completion more than once for one job (at-least-once at work).
            "jobs_completed_more_than_once": sum(1 for n in completions.values() if n > 1),
            "extra_completions": sum(n - 1 for n in completions.values() if n > 1),
            # Attempts a handler had started that the platform then gave up on (lost worker, lease ...).
            "started_attempts_lost": started_then_lost,
            "handler_starts": sum(starts.values()),
            "handler_completions": sum(completions.values()),
        },
        "attempts_lost_to_infrastructure": dict(lost_reasons.most_common()),
        "quick_jobs_failed_by_chaos": dict(failed_quick_jobs),
    }
