"""The scheduler's metrics: leadership, reconcile passes and what they repaired, ready-queue gauges.

Invariant: only the leader moves the pass, repair and queue metrics; a replica that stops
leading sets `is_leader` to 0 and drops its queue gauges, so summing them across replicas
never counts a queue twice. Queue depth and the oldest due age come from one grouped query
(`repairs.queue_stats`) every `QUEUE_SAMPLE_SECONDS`, never from a scrape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from dispatchd.platform.store import repairs
from dispatchd.platform.store.fires import Started

if TYPE_CHECKING:
    from dispatchd.scheduler.reconciler import PassReport

QUEUE_SAMPLE_SECONDS = 5.0
PASS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

IS_LEADER = Gauge("dispatchd_scheduler_is_leader", "1 while this scheduler leads, else 0.")
EPOCH = Gauge("dispatchd_scheduler_epoch", "Fencing epoch of this scheduler's latest leadership term.")
TAKEOVERS = Counter("dispatchd_scheduler_takeovers_total", "Leadership terms this scheduler started.")
PASS_DURATION = Histogram(
    "dispatchd_scheduler_pass_duration_seconds", "Duration of one reconcile pass.", buckets=PASS_SECONDS
)
REPAIRS = Counter("dispatchd_scheduler_repairs_total", "What reconcile passes repaired, by kind.", ["kind"])
LEASE_EXPIRIES = Counter("dispatchd_lease_expiries_total", "Attempts failed because their lease expired.")
TIMEOUTS = Counter("dispatchd_execution_timeouts_total", "Attempts failed for running past their execution timeout.")
QUEUE_DEPTH = Gauge("dispatchd_queue_depth", "Due queued executions, by job type (scheduler leader).", ["job_type"])
QUEUE_OLDEST_AGE = Gauge(
    "dispatchd_queue_oldest_due_age_seconds",
    "How long the oldest due queued execution has waited, by job type (scheduler leader).",
    ["job_type"],
)

SCHEDULE_FIRES = Counter(
    "dispatchd_schedule_fires_total",
    "Schedule fire times recorded (scheduler leader), by what each started: job, workflow_run, error or skipped.",
    ["outcome"],
)
SCHEDULE_FIRES_DROPPED = Counter(
    "dispatchd_schedule_fires_dropped_total",
    "Missed schedule fire times the catch-up policy dropped instead of firing (scheduler leader).",
)
for _outcome in ("job", "workflow_run", "error", "skipped"):  # every outcome reads 0 before its first fire
    SCHEDULE_FIRES.labels(_outcome)

REQUEUED = REPAIRS.labels("requeued")
LEASE_EXPIRED = REPAIRS.labels("lease_expired")
TIMED_OUT = REPAIRS.labels("timed_out")
OFFLINE_WORKER = REPAIRS.labels("offline_worker")
ORPHAN_CANCELLED = REPAIRS.labels("orphan_cancelled")


class QueueGauges:
    """Depth and oldest due age per job type; a type whose queue emptied reads 0, not a stale value."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.seen: set[str] = set()

    async def sample(self) -> None:
        stats = await repairs.queue_stats(self.pool)
        for job_type in self.seen - stats.keys():
            QUEUE_DEPTH.labels(job_type).set(0)
            QUEUE_OLDEST_AGE.labels(job_type).set(0)
        for job_type, (depth, oldest) in stats.items():
            QUEUE_DEPTH.labels(job_type).set(depth)
            QUEUE_OLDEST_AGE.labels(job_type).set(oldest)
        self.seen |= stats.keys()

    def clear(self) -> None:
        """No longer the leader: whoever leads now reports the queues."""
        QUEUE_DEPTH.clear()
        QUEUE_OLDEST_AGE.clear()
        self.seen.clear()


def count_pass(report: PassReport, seconds: float) -> None:
    """One finished reconcile pass of the leader."""
    PASS_DURATION.observe(seconds)
    for child, count in (
        (REQUEUED, report.requeued),
        (LEASE_EXPIRED, report.expired),
        (TIMED_OUT, report.timed_out),
        (OFFLINE_WORKER, report.released),
        (ORPHAN_CANCELLED, report.orphans_cancelled),
    ):
        if count:
            child.inc(count)
    if report.expired:
        LEASE_EXPIRIES.inc(report.expired)
    if report.timed_out:
        TIMEOUTS.inc(report.timed_out)


def _outcome_of(fire: Started | None) -> str:
    if fire is None:
        return "skipped"
    return "error" if fire.error else "workflow_run" if fire.run_id else "job"


def count_fires(started: Sequence[Started | None], dropped: int) -> None:
    """One schedule's fire: what each of its fire times started, and how many were dropped."""
    for fire in started:
        SCHEDULE_FIRES.labels(_outcome_of(fire)).inc()
    if dropped:
        SCHEDULE_FIRES_DROPPED.inc(dropped)


def leading(epoch: int) -> None:
    """A leadership term started (`epoch` from the lease; opening the fenced term may raise it)."""
    IS_LEADER.set(1)
    EPOCH.set(epoch)
    TAKEOVERS.inc()


def not_leading() -> None:
    IS_LEADER.set(0)
