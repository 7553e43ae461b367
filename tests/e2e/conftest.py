"""The whole platform as separate processes, as in production: a `stack` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from dispatchd.devtools.stores import free_port
from dispatchd.v1 import job_service_pb2_grpc
from tests.support.processes import ServiceProcess, python_module_argv


@dataclass
class Stack:
    env: dict[str, str]
    control_plane_target: str
    gateway_target: str
    spawn: Callable[..., ServiceProcess]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    _channels: list[grpc.Channel] = field(default_factory=list)

    def jobs(self) -> job_service_pb2_grpc.JobServiceStub:
        channel = grpc.insecure_channel(self.control_plane_target, options=[("grpc.enable_http_proxy", 0)])
        self._channels.append(channel)
        return job_service_pb2_grpc.JobServiceStub(channel)

    def start_worker(self, name: str = "worker", *args: str) -> ServiceProcess:
        argv = [
            *python_module_argv("dispatchd.sdk.cli"),
            "--target",
            self.gateway_target,
            "--worker-id",
            name,
            *args,
        ]
        worker = self.spawn(name, argv, self.env)
        self.processes[name] = worker
        return worker

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture
def stack(
    database_url: str, redis_url: str, spawn_service: Callable[..., ServiceProcess]
) -> Iterator[Stack]:
    """Control plane, worker gateway and two schedulers, each its own process, all healthy."""
    ports = {name: free_port() for name in ("control_plane", "gateway", "scheduler_a", "scheduler_b")}
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_CONTROL_PLANE_LISTEN": f"127.0.0.1:{ports['control_plane']}",
        "DISPATCHD_GATEWAY_LISTEN": f"127.0.0.1:{ports['gateway']}",
        "DISPATCHD_LOG_LEVEL": "INFO",
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
    }
    stack = Stack(
        env=env,
        control_plane_target=env["DISPATCHD_CONTROL_PLANE_LISTEN"],
        gateway_target=env["DISPATCHD_GATEWAY_LISTEN"],
        spawn=spawn_service,
    )
    services = {
        "control-plane": ("dispatchd.control_plane.main", {}, ports["control_plane"]),
        "worker-gateway": ("dispatchd.worker_gateway.main", {}, ports["gateway"]),
        "scheduler-a": (
            "dispatchd.scheduler.main",
            {"DISPATCHD_SCHEDULER_LISTEN": f"127.0.0.1:{ports['scheduler_a']}"},
            ports["scheduler_a"],
        ),
        "scheduler-b": (
            "dispatchd.scheduler.main",
            {"DISPATCHD_SCHEDULER_LISTEN": f"127.0.0.1:{ports['scheduler_b']}"},
            ports["scheduler_b"],
        ),
    }
    for name, (module, extra, _) in services.items():
        stack.processes[name] = spawn_service(name, python_module_argv(module), {**env, **extra})
    for name, (_, _, port) in services.items():
        stack.processes[name].wait_healthy(f"127.0.0.1:{port}", timeout=30)
    try:
        yield stack
    finally:
        stack.close()
