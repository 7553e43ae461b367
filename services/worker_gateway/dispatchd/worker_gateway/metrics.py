"""The worker gateway's metrics: connected streams and free slots, claim latency, requeues and stale results.

Invariant: counters move after the store committed what they count (a claim, a release, a
result it refused as stale); the stream and slot gauges are sampled every
`GAUGE_SAMPLE_SECONDS` on the event loop, never computed in a scrape (which runs on another
thread, where the sessions cannot be read safely).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from dispatchd.common.metrics import Bound
from dispatchd.platform.metrics import JOB_SECONDS
from dispatchd.platform.store.rows import Claim, Settlement

if TYPE_CHECKING:
    from dispatchd.worker_gateway.dispatcher import Dispatcher

GAUGE_SAMPLE_SECONDS = 2.0

SUBMIT_TO_CLAIM = Histogram(
    "dispatchd_job_submit_to_claim_seconds",
    "From when an attempt became due (its submit, unless delayed or a retry) to its claim for a worker.",
    ["job_type"],
    buckets=JOB_SECONDS,
)
STREAM_CLOSE_REQUEUES = Counter(
    "dispatchd_stream_close_requeues_total",
    "Executions released because the worker stream holding them ended (requeued, or dead-lettered if last).",
)
STALE_RESULTS = Counter("dispatchd_stale_results_total", "Results for executions the stream no longer owned.")
WORKER_STREAMS = Gauge("dispatchd_worker_streams", "Registered worker streams connected to this gateway.")
WORKER_FREE_SLOTS = Gauge("dispatchd_worker_free_slots", "Free execution slots of the workers connected here.")

_claimed: Bound[str, Histogram] = Bound(SUBMIT_TO_CLAIM.labels)


def observe_claims(claims: Iterable[Claim]) -> None:
    for claim in claims:
        if claim.waited_seconds is not None:
            _claimed(claim.job_type).observe(claim.waited_seconds)


def count_released(released: Iterable[Settlement]) -> None:
    """What `release_owned` applied for a stream that ended (or was superseded)."""
    count = sum(1 for s in released if s.applied)
    if count:
        STREAM_CLOSE_REQUEUES.inc(count)


def stream_gauges(dispatcher: Dispatcher) -> Callable[[], Awaitable[None]]:
    """What `platform.metrics.sample_every` runs: the streams the dispatcher serves and their free slots."""

    async def sample() -> None:
        sessions = list(dispatcher.sessions.values())
        WORKER_STREAMS.set(len(sessions))
        WORKER_FREE_SLOTS.set(sum(s.free_slots for s in sessions))

    return sample
