"""A job's journey as timestamps, and what a run of them adds up to (stdlib only: both sides use it).

Invariant: every timestamp is epoch seconds on this host's clock (the client's
time.time(), the worker's time.time(), Postgres' clock_timestamp() or Celery's date_done),
so differences are meaningful only because perf runs everything on one machine. A leg
whose end is missing (no claim row, a result that is not the no-op handler's) is left out
of that leg's figures and counted as missing, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perf.stats import rate, summary_ms

LEGS = ("claim", "handler_start", "handler_done", "recorded")


@dataclass(frozen=True)
class Journey:
    submitted: float
    succeeded: bool
    claim: float | None = None  # executions.claimed_at of attempt 1
    handler_start: float | None = None
    handler_done: float | None = None
    recorded: float | None = None  # the terminal state committed (jobs.finished_at)


def handler_times(result: bytes | str | None) -> tuple[float | None, float | None]:
    """(start, end) from the no-op handler's `b"<start> <end>"`; (None, None) for anything else."""
    text = result.decode(errors="replace") if isinstance(result, bytes) else (result or "")
    parts = text.split()
    try:
        return (float(parts[0]), float(parts[1])) if len(parts) == 2 else (None, None)
    except ValueError:
        return None, None


def legs(journeys: Sequence[Journey]) -> dict[str, Any]:
    """submit -> each leg's end: latency summaries (ms) and how many journeys lacked that leg."""
    figures: dict[str, Any] = {}
    for leg in LEGS:
        ends = [(getattr(j, leg), j.submitted) for j in journeys]
        samples = [end - submitted for end, submitted in ends if end is not None]
        figures[f"submit_to_{leg}_ms"] = summary_ms(samples)
        figures[f"missing_{leg}"] = len(ends) - len(samples)
    return figures


def completed_between(journeys: Sequence[Journey], start: float, end: float) -> int:
    """Succeeded journeys recorded in [start, end)."""
    return sum(1 for j in journeys if j.succeeded and j.recorded is not None and start <= j.recorded < end)


def throughput(journeys: Sequence[Journey], start: float, end: float) -> dict[str, float | int]:
    """Completions per second over the sustained window [start, end)."""
    done = completed_between(journeys, start, end)
    return {
        "window_seconds": round(end - start, 3),
        "completed_in_window": done,
        "jobs_per_second": rate(done, end - start),
    }
