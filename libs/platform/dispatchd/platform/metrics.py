"""The metrics every service shares: what happened to jobs, and store errors.

Invariant: every job counter moves only after the transition it counts was committed, and
from what the store returned (a `Settlement`, a `Submitted`, a `Cancelled`): a guard that did
not match changes nothing and counts nothing, so a transition is counted once by whichever
process made it, and sums across processes are exact. Labels are bounded: `job_type`
(operators configure a bounded set), outcome and kind from fixed lists, never an id.

Hot path: label children are bound once per job type (`for_type`) and per store, so a count
is a dict lookup and prometheus-client's own increment. The gRPC metrics are in `rpc_metrics`;
what only one service emits is defined in that service (`dispatchd.scheduler.metrics`,
`dispatchd.worker_gateway.metrics`), so no process exports series it never moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from dispatchd.common.metrics import Bound
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store.rows import JobRow, Settlement

log = logging.getLogger("dispatchd.metrics")

# Seconds, from a fast handler to long batch jobs.
JOB_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)

SUBMITTED = Counter("dispatchd_jobs_submitted_total", "Jobs accepted (deduplicated resubmits excluded).", ["job_type"])
FINISHED = Counter("dispatchd_jobs_finished_total", "Jobs that reached a terminal state.", ["job_type", "outcome"])
RETRIED = Counter("dispatchd_jobs_retried_total", "Failed attempts that queued another attempt.", ["job_type"])
DEAD_LETTERED = Counter("dispatchd_jobs_dead_lettered_total", "Jobs that failed their last attempt.", ["job_type"])
REDRIVEN = Counter("dispatchd_jobs_redriven_total", "Dead-lettered jobs queued again.", ["job_type"])
CANCELLED = Counter("dispatchd_jobs_cancelled_total", "Jobs cancelled before they finished.", ["job_type"])
SUBMIT_TO_TERMINAL = Histogram(
    "dispatchd_job_submit_to_terminal_seconds",
    "From a job's submit to its terminal state.",
    ["job_type", "outcome"],
    buckets=JOB_SECONDS,
)

STORE_ERRORS = Counter("dispatchd_store_errors_total", "Failed Postgres or Redis operations.", ["store", "service"])

OUTCOME_OF = {JobStatus.SUCCEEDED: "succeeded", JobStatus.FAILED: "failed", JobStatus.CANCELED: "canceled"}


@dataclass(frozen=True, slots=True)
class _Outcome:
    finished: Counter
    to_terminal: Histogram


class JobTypeMetrics:
    """The children of one job type, bound once."""

    __slots__ = ("cancelled", "dead_lettered", "outcomes", "redriven", "retried", "submitted")

    def __init__(self, job_type: str) -> None:
        self.submitted = SUBMITTED.labels(job_type)
        self.retried = RETRIED.labels(job_type)
        self.dead_lettered = DEAD_LETTERED.labels(job_type)
        self.redriven = REDRIVEN.labels(job_type)
        self.cancelled = CANCELLED.labels(job_type)
        self.outcomes = {
            status: _Outcome(FINISHED.labels(job_type, outcome), SUBMIT_TO_TERMINAL.labels(job_type, outcome))
            for status, outcome in OUTCOME_OF.items()
        }

    def finished(self, status: JobStatus, age_seconds: float | None) -> None:
        outcome = self.outcomes[status]
        outcome.finished.inc()
        if age_seconds is not None:
            outcome.to_terminal.observe(age_seconds)


for_type: Bound[str, JobTypeMetrics] = Bound(JobTypeMetrics)


def count_settled(settlements: Iterable[Settlement]) -> None:
    """Count what applied settlements committed: a retry queued, or the job finished (dead-lettered when failed)."""
    for s in settlements:
        if not s.applied or not s.job_type:
            continue
        metrics = for_type(s.job_type)
        if s.retry is not None:
            metrics.retried.inc()
        elif s.job_status in OUTCOME_OF:
            metrics.finished(s.job_status, s.job_age_seconds)
            if s.job_status is JobStatus.FAILED:
                metrics.dead_lettered.inc()


def count_cancelled(job: JobRow) -> None:
    """A job the control plane just cancelled (`job` as the cancel returned it)."""
    age = None if job.finished_at is None else (job.finished_at - job.created_at).total_seconds()
    metrics = for_type(job.job_type)
    metrics.cancelled.inc()
    metrics.finished(JobStatus.CANCELED, age)


# -- store errors: labelled with this process's service, named once at start (`serve`;
# "unknown" before that, in tools and tests).

_store_errors: Bound[str, Counter] = Bound(lambda store: STORE_ERRORS.labels(store, "unknown"))


def bind_service(service: str) -> None:
    global _store_errors
    _store_errors = Bound(lambda store: STORE_ERRORS.labels(store, service))
    for store in ("postgres", "redis"):
        _store_errors(store)  # present (at 0) from the start


def store_of(exc: BaseException) -> str:
    """Which store an error came from: redis-py's own errors are Redis; the rest come from the pool."""
    return "redis" if type(exc).__module__.startswith("redis") else "postgres"


def count_store_error(exc: BaseException | None = None, store: str | None = None) -> None:
    """One failed store operation; `store` when the caller knows it, else guessed from `exc`."""
    _store_errors(store or ("postgres" if exc is None else store_of(exc))).inc()


async def sample_every(seconds: float, take: Callable[[], Awaitable[None]]) -> None:
    """Set gauges with `take` now and every `seconds` until cancelled: on a schedule, never per scrape.

    A failed sample (a store down) is counted and logged; the gauges keep their last values.
    """
    while True:
        try:
            await take()
        except Exception as exc:
            count_store_error(exc)
            log.warning("could not sample metrics: %s", exc)
        await asyncio.sleep(seconds)
