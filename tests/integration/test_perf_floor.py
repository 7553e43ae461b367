"""perf.floor: its gRPC leg against the bare server (its own process), briefly; its reading of the smoke evidence."""

from __future__ import annotations

from pathlib import Path

from dispatchd.common import loops
from perf.evidence import ROOT
from perf.floor import bare_server, dispatchd_figures, grpc_floor


def test_the_bare_server_answers_and_its_cpu_per_call_is_measured() -> None:
    with bare_server() as (port, pid):
        figures = loops.run(grpc_floor(0.5, port, pid))
    opened, closed = figures["open_100_per_second"], figures["closed_64_in_flight"]
    assert 45 <= opened["latency_ms"]["count"] <= 50  # 100/s for half a second, every call answered
    assert opened["server_cpu_ms_per_call"] > 0
    assert closed["calls_per_second"] > 100 and closed["latency_ms"]["count"] > 50
    assert closed["server_cpu_ms_per_call"] > 0


def test_the_smoke_figures_are_copied_with_their_commit(tmp_path: Path) -> None:
    copied = dispatchd_figures(ROOT / "evidence/perf/smoke.json")
    assert copied is not None and copied["source"] == "evidence/perf/smoke.json" and copied["commit"]
    assert copied["open_single_submit_call_ms"]["p50"] > 0
    assert dispatchd_figures(tmp_path / "absent.json") is None
