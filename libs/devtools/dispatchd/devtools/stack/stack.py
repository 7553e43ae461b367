"""The whole platform on this machine, every part its own process and every part killable.

`Stack(topology, directory)` starts the stores (given or private, see backing), runs the
migrations, starts every service of the topology at once and waits until each is SERVING,
then starts the workers and waits until each has connected to a gateway. Each process can
then be killed, stopped or restarted by name on the same address; `stop()` (or leaving the
`with`/`async with` block) stops everything in reverse order, the private stores last.

Invariant: whatever `start()` got to before failing is stopped by `stop()`, so a launcher
that wraps both in try/finally never leaks a process or a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools.stack.backing import Backing
from dispatchd.devtools.stack.dashboard import NAME as DASHBOARD
from dispatchd.devtools.stack.dashboard import dashboard_process, url_of
from dispatchd.devtools.stack.database import connected_workers, database_now
from dispatchd.devtools.stack.health import CHANNEL_OPTIONS
from dispatchd.devtools.stack.process import STOP_GRACE, ServiceFailed, ServiceProcess, python_module_argv
from dispatchd.devtools.stack.service import free_listen, service_process
from dispatchd.devtools.stack.topology import CONTROL_PLANE, GATEWAY, SCHEDULER, SERVICES, Topology, Workers, kind_of
from dispatchd.devtools.stores import PostgresInstance, RedisInstance
from dispatchd.v1 import job_service_pb2_grpc

log = logging.getLogger(__name__)

WORKER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Exit:
    """A process that died although nobody stopped it."""

    name: str
    code: int | None
    log_tail: str


class Stack:
    def __init__(self, topology: Topology, directory: Path, say: Callable[[str], None] = log.info) -> None:
        self.topology = topology
        self.directory = directory
        self.log_dir = directory / "logs"
        self.say = say
        self.backing = Backing(topology.stores, directory, self.log_dir, say)
        self.processes: dict[str, ServiceProcess] = {}
        self.targets: dict[str, str] = {}  # where each service listens (workers have none)
        self.worker_ids: dict[str, str] = {}  # worker process name -> worker id
        self.restarts: Counter[str] = Counter()  # by kind (worker, scheduler, postgres...)
        self.started_at: dt.datetime | None = None
        self._channels: list[grpc.Channel] = []

    # -- what clients need

    @property
    def database_url(self) -> str:
        return self.backing.database_url

    @property
    def redis_url(self) -> str:
        return self.backing.redis_url

    @property
    def postgres(self) -> PostgresInstance | None:
        return self.backing.postgres

    @property
    def redis(self) -> RedisInstance | None:
        return self.backing.redis

    def metrics_urls(self) -> dict[str, str]:
        """Where each process (services and workers) serves its Prometheus metrics, by name."""
        return {name: p.metrics_url for name, p in self.processes.items() if p.metrics is not None}

    def targets_of(self, kind: str) -> list[str]:
        return [target for name, target in self.targets.items() if kind_of(name) == kind]

    @property
    def control_plane_target(self) -> str:
        return self.targets_of(CONTROL_PLANE)[0]

    @property
    def dashboard_url(self) -> str:
        """Where the dashboard serves its pages (a topology with `dashboard=True`)."""
        return url_of(self.processes[DASHBOARD])

    @property
    def gateway_target(self) -> str:
        return self.targets_of(GATEWAY)[0]

    @property
    def schedulers(self) -> list[str]:
        return [name for name in self.targets if kind_of(name) == SCHEDULER]

    @property
    def workers(self) -> list[str]:
        return list(self.worker_ids)

    def client_security(self) -> ClientSecurity:
        """How an administrator's client reaches the services (plaintext unless secured)."""
        security = self.topology.security
        return security.cli() if security is not None else ClientSecurity()

    def channel(self, security: ClientSecurity | None = None, target: str | None = None) -> grpc.Channel:
        """A channel to `target` (default: the control plane) as `security` (default: the admin); closed by stop()."""
        channel = (security or self.client_security()).sync_channel(
            target or self.control_plane_target, options=CHANNEL_OPTIONS
        )
        self._channels.append(channel)
        return channel

    def jobs(self, security: ClientSecurity | None = None) -> job_service_pb2_grpc.JobServiceStub:
        return job_service_pb2_grpc.JobServiceStub(self.channel(security))

    @property
    def env(self) -> dict[str, str]:
        """Settings every process gets: stores, where the (first) control plane and gateway listen, security, extras."""
        topo = self.topology
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            **({"DISPATCHD_REDIS_PREFIX": topo.redis_prefix} if topo.redis_prefix else {}),
            **{
                service.listen_variable: self.targets_of(service.kind)[0]
                for service in SERVICES[:2]
                if self.targets_of(service.kind)
            },
            **(topo.security.server_env() if topo.security is not None else {}),
            **topo.settings,
        }

    # -- lifecycle

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.backing.start()
        self.started_at = self.db_now()
        self._define_services()
        # Start all, then wait: they come up in parallel.
        services = list(self.processes.values())
        for process in services:
            process.start()
        for process in services:
            process.wait_healthy()
            self.say(f"{process.name} is serving on {process.listen}")
        names = [self.add_worker(name, group=group).name for name, group in self.topology.worker_names()]
        if names:
            self.wait_workers(names, self.started_at)
            self.say(f"{len(names)} worker(s) connected to the gateway")

    def _define_services(self) -> None:
        topo = self.topology
        names = topo.service_names()
        self.targets = {name: topo.listen.get(name) or free_listen() for name, _ in names}
        env = self.env
        for name, service in names:
            self.processes[name] = service_process(
                service.kind,
                env,
                self.log_dir,
                name=name,
                listen=self.targets[name],
                health=free_listen() if topo.health_ports else None,
                security=self.client_security(),
                metrics=free_listen() if topo.metrics else None,
            )
        if topo.dashboard:
            self.processes[DASHBOARD] = dashboard_process(
                self.control_plane_target,
                self.client_security(),
                self.log_dir,
                listen=topo.listen.get(DASHBOARD),
                settings=topo.settings,
            )

    def add_worker(
        self, name: str, *args: str, group: Workers | None = None, start: bool = True, target: str | None = None
    ) -> ServiceProcess:
        """A worker `name` (also its worker id) with `group`'s options plus `args`, on a gateway (or `target`)."""
        group = group or Workers(args=())
        gateways = [target] if target else self.targets_of(GATEWAY)
        argv = [
            *python_module_argv("dispatchd.sdk.cli"),
            *group.args,
            *args,
            "--target", gateways[len(self.worker_ids) % len(gateways)],
            "--worker-id", name,
        ]  # fmt: skip
        for option, value in (
            ("--concurrency", group.concurrency),
            ("--heartbeat-seconds", group.heartbeat_seconds),
            ("--grace-seconds", group.grace_seconds),
        ):
            if value is not None:
                argv += [option, str(value)]
        if self.topology.security is not None:
            argv += self.topology.security.worker_args(name)
        metrics = free_listen() if self.topology.metrics else None
        if metrics is not None:
            argv += ["--metrics-listen", metrics]
        process = ServiceProcess(name, argv, {**self.env, **group.env}, self.log_dir, metrics=metrics)
        self.worker_ids[name] = name
        self.processes[name] = process
        return process.start() if start else process

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        for process in reversed(list(self.processes.values())):
            if process.is_running():
                self.say(f"stopping {process.name}")
            process.stop(STOP_GRACE)
        self.backing.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- killing and restarting one part

    def kill(self, name: str) -> None:
        """SIGKILL one process (and its children)."""
        self.processes[name].kill()

    def start_again(self, name: str, wait: bool = True) -> None:
        """Start a stopped or killed process on its old address; wait until it serves (services)."""
        process = self.processes[name]
        process.start()
        self.restarts[kind_of(name)] += 1
        if wait and process.health is not None:
            process.wait_healthy()

    def restart(self, name: str, downtime: float = 0.0) -> None:
        self.kill(name)
        time.sleep(downtime)
        self.start_again(name)

    def crash_postgres(self, downtime: float = 0.0) -> None:
        self.backing.crash_postgres(downtime)
        self.restarts["postgres"] += 1

    def crash_redis(self, downtime: float = 0.0) -> None:
        self.backing.crash_redis(downtime)
        self.restarts["redis"] += 1

    def ensure_stores(self) -> None:
        self.backing.ensure_running()

    def unexpected_exits(self, restart: bool = True) -> list[Exit]:
        """Processes that died on their own (what is killed here is started again at once)."""
        found = []
        for name, process in self.processes.items():
            if process.started and process.returncode is not None:
                found.append(Exit(name, process.returncode, process.log_tail(30)))
                if restart:
                    with contextlib.suppress(ServiceFailed):
                        self.start_again(name)
        return found

    # -- observing

    def db_now(self) -> dt.datetime:
        return database_now(self.database_url)

    def wait_workers(self, names: list[str], since: dt.datetime, timeout: float = WORKER_TIMEOUT) -> None:
        """Until each named worker has (re)connected to a gateway after `since` (database time)."""
        ids = [self.worker_ids[n] for n in names]
        deadline = time.monotonic() + timeout
        while connected_workers(self.database_url, ids, since) < len(ids):
            for name in names:
                if not self.processes[name].is_running():
                    raise self.processes[name].failure(f"exited with status {self.processes[name].returncode}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.processes[n].log_tail(15)}" for n in names)
                raise ServiceFailed(f"workers {names} did not connect within {timeout:.0f}s\n{tails}")
            time.sleep(0.1)
