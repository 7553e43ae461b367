"""The chaos test: thousands of jobs while every part of the platform is SIGKILLed at random.

The short profile runs with the normal suite (`make test`) and writes its figures to the
test's temporary folder, so a test run leaves the tracked tree alone; `make chaos` runs the
profile named by CHAOS_PROFILE (default: long) and writes evidence/drills/chaos-<profile>.json.
What is run and checked is described in perf/chaos.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perf.chaos import PROFILES, run
from perf.evidence import ROOT

EVIDENCE = ROOT / "evidence" / "drills"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_chaos_short(tmp_path: Path) -> None:
    outcome = run(PROFILES["short"], tmp_path, tmp_path / "chaos-short.json")
    assert outcome.passed, outcome.summary()
    assert outcome.evidence["jobs"]["submitted"] >= 1000
    assert set(outcome.evidence["chaos"]["kills_by_kind"]) == {
        "scheduler_leader",
        "gateway",
        "control_plane",
        "worker",
        "redis",
        "postgres",
    }


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_profile(tmp_path: Path) -> None:
    name = os.environ.get("CHAOS_PROFILE", "long")
    if name not in PROFILES:
        pytest.fail(f"CHAOS_PROFILE={name!r}; choose one of {sorted(PROFILES)}")
    outcome = run(PROFILES[name], tmp_path, EVIDENCE / f"chaos-{name}.json")
    assert outcome.passed, outcome.summary()
