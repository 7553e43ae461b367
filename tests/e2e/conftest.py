"""The whole platform as separate processes, as in production: a `stack` fixture (dispatchd.devtools.stack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatchd.devtools.stack import Stack, Stores, Topology


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Control plane, worker gateway and two schedulers, each its own process, all healthy; no workers."""
    topology = Topology(
        schedulers=2,
        workers=(),
        # The test's database is cloned from the migrated template already.
        stores=Stores(database_url=database_url, redis_url=redis_url, migrate=False),
        settings={"DISPATCHD_LOG_LEVEL": "INFO", "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3"},
    )
    with Stack(topology, tmp_path) as started:
        yield started
