"""The worker process's metrics: executions by job type and outcome, their duration, how many run now.

Invariant: an execution is counted once, when its handler ended and its result (or none,
when abandoned) was decided; `dispatchd_worker_inflight` counts handlers holding a slot.
Children are bound once per job type and outcome. `dispatchd-worker --metrics-listen`
serves them (dispatchd.common.metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from dispatchd.common.metrics import Bound

EXECUTIONS = Counter(
    "dispatchd_worker_executions_total", "Executions this worker ended, by outcome.", ["job_type", "outcome"]
)
DURATION = Histogram(
    "dispatchd_worker_execution_duration_seconds",
    "Time a handler ran (from taking a slot to its result).",
    ["job_type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
INFLIGHT = Gauge("dispatchd_worker_inflight", "Handlers running now.")

# succeeded / failed: the handler's result; canceled: the gateway cancelled it; timed_out: its
# execution timeout passed; abandoned: the stream went away, no result was sent.
OUTCOMES = ("succeeded", "failed", "canceled", "timed_out", "abandoned")


class JobTypeMetrics:
    __slots__ = ("duration", "outcomes")

    def __init__(self, job_type: str) -> None:
        self.duration = DURATION.labels(job_type)
        self.outcomes = {outcome: EXECUTIONS.labels(job_type, outcome) for outcome in OUTCOMES}

    def ended(self, outcome: str, seconds: float | None) -> None:
        """`seconds` is None when the execution ended before it got a slot."""
        self.outcomes[outcome].inc()
        if seconds is not None:
            self.duration.observe(seconds)


for_type: Bound[str, JobTypeMetrics] = Bound(JobTypeMetrics)
