"""Fixtures of the integration tests that run services as their own processes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatchd.devtools.stack import ServiceProcess
from tests.support.processes import Spawner

StartControlPlane = Callable[[str], ServiceProcess]


@pytest.fixture
def start_control_plane(database_url: str, redis_url: str, spawn_service: Spawner) -> StartControlPlane:
    """Start a control plane listening on `target` against the test's database and Redis."""

    def start(target: str) -> ServiceProcess:
        env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2"}
        return spawn_service.service("control-plane", env, listen=target)

    return start
