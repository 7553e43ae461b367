"""The tracing-cost verdict: medians of each side, the drop against the budget, spans required."""

from __future__ import annotations

from typing import Any

from perf.tracing_cost import verdict


def _trial(tracing: bool, jobs_per_second: float, spans: int = 0) -> dict[str, Any]:
    return {"tracing": tracing, "jobs_per_second": jobs_per_second, "spans_received": {"worker": spans}}


def test_the_drop_compares_the_medians_of_each_side() -> None:
    trials = [_trial(False, 1000), _trial(True, 990, 5), _trial(False, 400), _trial(True, 960, 5), _trial(False, 980)]
    result = verdict(trials, budget=5.0)
    assert result["jobs_per_second_off_median"] == 980
    assert result["jobs_per_second_on_median"] == 975
    assert result["throughput_drop_percent"] == 0.51
    assert result["within_budget"]


def test_a_drop_over_the_budget_fails() -> None:
    assert not verdict([_trial(False, 1000), _trial(True, 940, 5)], budget=5.0)["within_budget"]


def test_a_traced_run_that_exported_no_span_fails_however_cheap() -> None:
    result = verdict([_trial(False, 1000), _trial(True, 1000, 0)], budget=5.0)
    assert result["spans_received_with_tracing_on"] == 0
    assert not result["within_budget"]
