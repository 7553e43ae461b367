"""The region drill in its tiny mode, so the procedure it exercises cannot rot.

A real streaming replica is made, its passive services are checked (reads served, writes
and worker streams refused naming region A), region A is killed under load, promote-region.sh
promotes and records region B, B's services switch active and accept writes, and no job
acknowledged by A is missing in B (replication is synchronous in this mode) (`make drill-region` runs the full drill).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perf.evidence import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_the_tiny_region_drill_fails_over_with_nothing_lost(tmp_path: Path) -> None:
    out = tmp_path / "region.json"
    done = subprocess.run(
        [sys.executable, "-m", "perf.region_drill", "--tiny", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    evidence = json.loads(out.read_text())
    assert evidence["ok"] and evidence["failures"] == []
    assert evidence["passive_region_b"] == {**evidence["passive_region_b"], "read_served": True,
                                            "write_refused": True, "worker_stream_refused": True}  # fmt: skip
    phase = evidence["failover_sync"]
    assert phase["acknowledged_by_old"] > 0 and phase["acknowledged_by_new"] > 0
    assert phase["rpo_jobs"] == 0 and phase["rto_seconds"] <= evidence["rto_target_seconds"]
    assert any("recorded region-b as the primary region" in line for line in phase["procedure_output"])
