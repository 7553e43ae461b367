"""The worker gateway's metrics: connected streams and free slots, claim latency, requeues and stale results,
and the messages on worker streams with the items they carry (how well batches pack).

Invariant: counters move after the store committed what they count (a claim, a release, a
result it refused as stale); the stream and slot gauges are sampled every
`GAUGE_SAMPLE_SECONDS` on the event loop, never computed in a scrape (which runs on another
thread, where the sessions cannot be read safely).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

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

STREAM_MESSAGES = Counter(
    "dispatchd_worker_stream_messages_total", "Messages on worker streams (in: from workers).", ["direction"]
)
STREAM_ITEMS = Counter(
    "dispatchd_worker_stream_items_total",
    "Items those messages carried: one per plain message, each item of a batch.",
    ["direction"],
)
_MESSAGES_IN, _MESSAGES_OUT = STREAM_MESSAGES.labels("in"), STREAM_MESSAGES.labels("out")
_ITEMS_IN, _ITEMS_OUT = STREAM_ITEMS.labels("in"), STREAM_ITEMS.labels("out")
# A batch payload -> its repeated field of items.
_BATCH_ITEMS = {
    "result_batch": "results",
    "started_batch": "started",
    "assignment_batch": "assignments",
    "ack_batch": "acks",
}

_claimed: Bound[str, Histogram] = Bound(SUBMIT_TO_CLAIM.labels)


def observe_claims(claims: Iterable[Claim]) -> None:
    for claim in claims:
        if claim.waited_seconds is not None:
            _claimed(claim.job_type).observe(claim.waited_seconds)


def _items(message: Any, kind: str | None) -> int:
    field = _BATCH_ITEMS.get(kind or "")
    return 1 if field is None else len(getattr(getattr(message, kind or ""), field))


def count_inbound(request: Any, kind: str | None) -> None:
    """A message a worker sent (`kind`: its payload)."""
    _MESSAGES_IN.inc()
    _ITEMS_IN.inc(_items(request, kind))


def count_outbound(response: Any) -> None:
    """A message written to a worker."""
    _MESSAGES_OUT.inc()
    _ITEMS_OUT.inc(_items(response, response.WhichOneof("payload")))


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
