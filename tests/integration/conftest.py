"""Fixtures of the integration tests that run services as their own processes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.processes import ServiceProcess, python_module_argv

StartControlPlane = Callable[[str], ServiceProcess]


@pytest.fixture
def start_control_plane(
    database_url: str, redis_url: str, spawn_service: Callable[..., ServiceProcess]
) -> StartControlPlane:
    def start(target: str) -> ServiceProcess:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DISPATCHD_CONTROL_PLANE_LISTEN": target,
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
        }
        process = spawn_service("control-plane", python_module_argv("dispatchd.control_plane.main"), env)
        process.wait_healthy(target, timeout=30)
        return process

    return start
