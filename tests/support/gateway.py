"""A worker gateway process for integration tests.

Invariant: `start_gateway` returns only once the gateway answers health checks, so a test's
first stream never races its startup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dispatchd.devtools.stores import free_port
from tests.support.processes import ServiceProcess, python_module_argv


@dataclass
class Gateway:
    process: ServiceProcess
    target: str
    env: dict[str, str]

    def restart(self) -> None:
        self.process.start()
        self.process.wait_healthy(self.target, timeout=30)


def start_gateway(spawn: Callable[..., ServiceProcess], database_url: str, redis_url: str, **extra: str) -> Gateway:
    target = f"127.0.0.1:{free_port()}"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_GATEWAY_LISTEN": target,
        "DISPATCHD_LOG_LEVEL": "INFO",
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
        **extra,
    }
    process = spawn("worker-gateway", python_module_argv("dispatchd.worker_gateway.main"), env)
    process.wait_healthy(target, timeout=30)
    return Gateway(process, target, env)
