"""A worker gateway process for integration tests.

Invariant: `start_gateway` returns only once the gateway answers health checks, so a test's
first stream never races its startup.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatchd.devtools.stack import ServiceProcess
from tests.support.processes import Spawner


@dataclass
class Gateway:
    process: ServiceProcess
    target: str
    env: dict[str, str]

    def restart(self) -> None:
        self.process.start()
        self.process.wait_healthy()


def start_gateway(spawn: Spawner, database_url: str, redis_url: str, **extra: str) -> Gateway:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_LOG_LEVEL": "INFO",
        # Short: a test that ends with work in flight should not wait for it at teardown; the
        # drain tests that need a grace set their own.
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "0.5",
        **extra,
    }
    process = spawn.service("worker-gateway", env)
    return Gateway(process, process.address, process.env)
