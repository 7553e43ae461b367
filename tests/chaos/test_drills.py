"""The failover drills (perf/drills.py) with few runs, so CI proves they work.

`make drill-failover` runs them in full and writes evidence/drills/failover.json; this writes to
a temporary file instead, so the suite never overwrites the measured evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.platform.config import Settings
from perf.drills import run


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_failover_drills(tmp_path: Path) -> None:
    evidence = run(2, tmp_path / "stack", tmp_path / "failover.json")
    assert (tmp_path / "failover.json").exists()
    takeover = evidence["scheduler_takeover"]
    requeue = evidence["worker_requeue"]
    assert len(takeover["samples"]) == 2 and len(requeue["samples"]) == 2
    # The standby takes over about a lease TTL after the leader dies; leave room for a busy machine.
    ttl = Settings().leader_ttl_seconds
    assert takeover["lease_takeover_s"]["max"] < ttl + 3, takeover
    assert takeover["delayed_retry_claimed_after_kill_s"]["max"] < ttl + 4, takeover
    # A killed worker's stream closes at once, so its execution is requeued at once.
    assert requeue["started_on_idle_worker_s"]["max"] < 3, requeue
    assert all(s["taken_over_by"] != s["killed"] for s in requeue["samples"]), requeue
    assert all(s["successor"] != s["killed"] for s in takeover["samples"]), takeover
    # Both gateways were killed once; the workers moved over and nothing was lost.
    gateways = evidence["gateway_failover"]
    assert [s["killed"] for s in gateways["samples"]] == ["worker-gateway#0", "worker-gateway#1"], gateways
    assert evidence["passed"], evidence["violations"]
