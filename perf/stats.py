"""Latency summaries every perf driver reports the same way (stdlib only: the Celery venv imports it too).

Invariant: a summary is computed from the raw samples, in milliseconds, with the
nearest-rank percentile (the smallest sample at or above the q-th percent of the samples);
no sample is dropped, and an empty sample set yields a count of 0 and no figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

QUANTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (0 < q <= 100); raises ValueError on no values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """count, mean, p50, p90, p99 and max of `seconds`, in milliseconds rounded to 0.01 ms."""
    if not seconds:
        return {"count": 0}
    ms = sorted(s * 1000 for s in seconds)
    figures: dict[str, float | int] = {"count": len(ms), "mean": round(sum(ms) / len(ms), 2)}
    for q in QUANTILES:
        figures[f"p{q}"] = round(percentile(ms, q), 2)
    figures["max"] = round(ms[-1], 2)
    return figures


def rate(count: int, seconds: float) -> float:
    """Events per second, rounded to 0.1; 0 when no time passed."""
    return round(count / seconds, 1) if seconds > 0 else 0.0
