"""The perf harness cannot silently rot: `perf.smoke` in a tiny mode against a test stack, evidence checked.

The stack is the test's own (services and one SDK worker loading perf.noop, each its own
process), given to the harness by address as a user's running stack would be; the harness
then runs all three drivers in their own processes (locust, worker load, end to end) for
about two seconds each. What is checked is the evidence file's shape and that every
driver measured something: the numbers themselves depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dispatchd.devtools.stack import Stack, Stores, Topology, Workers
from perf.evidence import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_the_smoke_harness_measures_every_driver_against_a_running_stack(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    topology = Topology(
        schedulers=1,
        workers=(Workers(1, ("--handlers", "perf.noop:register"), concurrency=10),),
        stores=Stores(database_url=database_url, redis_url=redis_url, migrate=False),
        metrics=False,
        settings={"DISPATCHD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
                  "DISPATCHD_MAX_STREAMS_PER_IDENTITY": "1000"},
    )  # fmt: skip
    out = tmp_path / "tiny.json"
    with Stack(topology, tmp_path / "stack") as stack:
        pids = [arg for name, p in stack.processes.items() for arg in ("--pid", f"{name}={p.pid}")]
        argv = [
            sys.executable, "-m", "perf.smoke", "--duration", "2", "--jobs", "50", "--no-metrics",
            "--target", stack.control_plane_target, "--gateway", stack.gateway_target,
            "--database-url", database_url, "--redis-url", redis_url, *pids, "--out", str(out),
        ]  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submit -> handler done" in done.stdout  # the summary table

    evidence = json.loads(out.read_text())
    assert len(evidence["commit"]["sha"]) == 40 and isinstance(evidence["commit"]["dirty"], bool)
    assert evidence["machine"]["cpus"] >= 1 and evidence["servers"]["postgres"] != "unknown"
    assert evidence["libraries"]["protobuf_backend"] in ("upb", "cpp", "python")

    locust = evidence["locust"]["aggregated"]
    assert locust["requests"] > 0 and locust["failures"] == 0
    assert set(evidence["locust"]["by_method"]) >= {"SubmitJob", "GetJob"}

    load = evidence["worker_load"]
    assert load["registered"] == 50 and load["errors"] == {}
    assert load["heartbeat_ack_ms"]["count"] >= 50

    phases = evidence["end_to_end"]
    opened = phases["open/single"]
    assert opened["errors"] == {} and opened["unfinished"] == 0 and opened["not_succeeded"] == 0
    assert opened["accepted"] == 200  # 100/s for 2 s
    for leg in ("claim", "handler_start", "handler_done", "recorded"):
        assert opened[f"submit_to_{leg}_ms"]["count"] == 200, leg
    assert opened["submit_to_claim_ms"]["p50"] <= opened["submit_to_recorded_ms"]["p50"]
    assert opened["cpu_seconds"]["control-plane"] > 0 and "worker-1" in opened["cpu_ms_per_job"]
    saturated = phases["saturation/single"]
    assert saturated["throughput"]["jobs_per_second"] > 0 and saturated["errors"] == {}
    for batch in ("open/batch", "saturation/batch"):  # skipped (with the reason) where the server lacks the RPC
        assert "skipped" in phases[batch] or (phases[batch]["errors"] == {} and phases[batch]["accepted"] > 0)
    for bulk in ("bulk/single", "bulk/batch"):
        assert "not ours to stop" in phases[bulk]["skipped"]
