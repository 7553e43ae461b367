"""Proof that one client spreads its calls over every control-plane replica behind one target.

Three control-plane processes stand behind one multi-address target (`ipv4:a,b,c`, what a
headless Service's `dns:///` name resolves to in a cluster). The client (`dispatchd.client`,
options from dispatchd.common.channels) must land calls on all three — gRPC's default
`pick_first` would send every call to one — and a client made while two of them were down
must reach them once they are up, with the servers' max_connection_age recycling its first
connection meanwhile. Calls are counted per process from its own `/metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatchd.client import Client, Retries
from dispatchd.devtools.stack import CONTROL_PLANE, Stack, Stores, Topology
from dispatchd.devtools.stack.topology import instance_names
from tests.support.scrape import Scrape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPLICAS = instance_names(CONTROL_PLANE, 3)


@pytest.fixture
def replicas(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    topology = Topology(
        control_planes=3,
        schedulers=1,
        workers=(),
        stores=Stores(database_url=database_url, redis_url=redis_url, migrate=False),
        settings={
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
            "DISPATCHD_MAX_CONNECTION_AGE_SECONDS": "2",
            "DISPATCHD_MAX_CONNECTION_AGE_GRACE_SECONDS": "1",
        },
    )
    with Stack(topology, tmp_path) as started:
        yield started


def _submits(stack: Stack, names: list[str] = REPLICAS) -> dict[str, float]:
    scrape = Scrape.of({name: stack.processes[name].metrics_url for name in names})
    return {
        name: sum(
            value
            for (sample, labels), value in samples.items()
            if sample == "dispatchd_grpc_server_requests_total" and dict(labels)["method"].endswith("/SubmitJob")
        )
        for name, samples in scrape.by_process.items()
    }


def _one_target(stack: Stack) -> str:
    return "ipv4:" + ",".join(stack.targets[name] for name in REPLICAS)


def _submit(client: Client, count: int, pause: float = 0.0) -> None:
    for i in range(count):
        client.submit("spread.unserved", {"i": i})
        time.sleep(pause)


def test_calls_from_one_client_land_on_every_replica(replicas: Stack) -> None:
    before = _submits(replicas)
    with Client(_one_target(replicas)) as client:
        _submit(client, 30)
    landed = {name: count - before[name] for name, count in _submits(replicas).items()}
    assert sum(landed.values()) == 30
    # round_robin: each replica takes a third; pick_first would give one replica all 30.
    assert all(count >= 5 for count in landed.values()), landed


def test_a_client_made_before_two_replicas_started_spreads_to_them(replicas: Stack) -> None:
    for name in REPLICAS[1:]:
        replicas.processes[name].stop()
    with Client(_one_target(replicas), retries=Retries(attempts=10)) as client:
        _submit(client, 5)
        alone = _submits(replicas, REPLICAS[:1])[REPLICAS[0]]
        for name in REPLICAS[1:]:
            replicas.start_again(name)
        # Across several connection ages (2 s ± 10%, grace 1 s): every connection is recycled.
        _submit(client, 40, pause=0.1)
    after = _submits(replicas)
    assert alone >= 5
    # The restarted replicas count from zero; the first one from what it took alone.
    landed = {name: after[name] - (alone if name == REPLICAS[0] else 0) for name in REPLICAS}
    assert all(count >= 5 for count in landed.values()), landed
