"""The whole platform on this machine, with every part killable: what drills stand on.

Private Postgres and Redis (devtools.stores) plus each service as its own process
(tests.support.processes.ServiceProcess): a control plane, a worker gateway, scheduler
replicas and workers, each restartable on the same address. Postgres keeps committed data
across SIGKILL (synchronous_commit stays on); Redis never persists, so restarting it
empties it, as losing a cache-only Redis would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from dispatchd.devtools.stores import PostgresInstance, RedisInstance, free_port
from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.queues import Keys
from tests.support.processes import ServiceFailed, ServiceProcess, python_module_argv

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "dispatchd"
HEALTH_TIMEOUT = 45.0
CONTROL_PLANE = "control-plane"
GATEWAY = "worker-gateway"


@dataclass(frozen=True)
class Topology:
    workers: int = 1
    worker_concurrency: int = 4
    schedulers: int = 2
    # Handlers the workers offer: `--builtins`, or e.g. `--handlers perf.chaos_handlers:register`.
    worker_handlers: tuple[str, ...] = ("--builtins",)
    heartbeat_seconds: float = 1.0
    # DISPATCHD_* settings for every service (short leases make lost work come back sooner).
    settings: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Exit:
    """A process that died although nobody killed it."""

    name: str
    code: int | None
    log_tail: str


class Cluster:
    def __init__(self, directory: Path, topology: Topology) -> None:
        self.directory = directory
        self.topology = topology
        self.pg = PostgresInstance(directory / "postgres" / "data", fast=True)
        self.redis = RedisInstance(directory / "redis", persist=False)
        self.log_dir = directory / "logs"
        self.processes: dict[str, ServiceProcess] = {}
        self.targets: dict[str, str] = {}  # health endpoint of each service (not workers)
        self.worker_ids: dict[str, str] = {}  # process name -> worker id
        self.restarts: Counter[str] = Counter()
        self.keys = Keys(PREFIX)

    # -- names

    @property
    def database_url(self) -> str:
        return self.pg.url

    @property
    def control_plane_target(self) -> str:
        return self.targets[CONTROL_PLANE]

    @property
    def gateway_target(self) -> str:
        return self.targets[GATEWAY]

    @property
    def schedulers(self) -> list[str]:
        return [n for n in self.processes if n.startswith("scheduler-")]

    @property
    def workers(self) -> list[str]:
        return list(self.worker_ids)

    # -- lifecycle

    def start(self) -> None:
        self.pg.start()
        self.redis.start()
        self._migrate()
        self.targets = {CONTROL_PLANE: _listen(), GATEWAY: _listen()}
        base = self._env()
        self._add(CONTROL_PLANE, "dispatchd.control_plane.main", base)
        self._add(GATEWAY, "dispatchd.worker_gateway.main", base)
        for i in range(1, self.topology.schedulers + 1):
            name = f"scheduler-{i}"
            self.targets[name] = _listen()
            self._add(name, "dispatchd.scheduler.main", {**base, "DISPATCHD_SCHEDULER_LISTEN": self.targets[name]})
        for name in self.processes:
            self.processes[name].start()
        for name, target in self.targets.items():
            self.processes[name].wait_healthy(target, timeout=HEALTH_TIMEOUT)
        since = self.db_now()
        for i in range(1, self.topology.workers + 1):
            self.add_worker(f"worker-{i}").start()
        self.wait_workers(self.workers, since)

    def add_worker(self, name: str) -> ServiceProcess:
        """Define (not start) a worker process with a stable worker id."""
        topo = self.topology
        worker_id = f"{name}-{self.directory.name}"[:100]
        argv = [
            *python_module_argv("dispatchd.sdk.cli"),
            *topo.worker_handlers,
            "--target", self.gateway_target,
            "--worker-id", worker_id,
            "--concurrency", str(topo.worker_concurrency),
            "--heartbeat-seconds", str(topo.heartbeat_seconds),
            "--grace-seconds", "2",
        ]  # fmt: skip
        self.worker_ids[name] = worker_id
        process = ServiceProcess(name, argv, {**self._env(), **topo.worker_env}, log_dir=self.log_dir, cwd=ROOT)
        self.processes[name] = process
        return process

    def _add(self, name: str, module: str, env: dict[str, str]) -> None:
        self.processes[name] = ServiceProcess(name, python_module_argv(module), env, log_dir=self.log_dir, cwd=ROOT)

    def _env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            "DISPATCHD_REDIS_PREFIX": PREFIX,
            "DISPATCHD_CONTROL_PLANE_LISTEN": self.targets[CONTROL_PLANE],
            "DISPATCHD_GATEWAY_LISTEN": self.targets[GATEWAY],
            "DISPATCHD_HEARTBEAT_SECONDS": str(self.topology.heartbeat_seconds),
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
            "DISPATCHD_LOG_LEVEL": "INFO",
            "GRPC_ENABLE_FORK_SUPPORT": "false",
            "PYTHONPATH": str(ROOT),  # handler modules such as perf.chaos_handlers
            **self.topology.settings,
        }

    def _migrate(self) -> None:
        # Its own process: Alembic runs an event loop and configures logging globally.
        argv = [sys.executable, "-m", "dispatchd.platform.migrate", "--database-url", self.pg.url]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(ServiceFailed, RuntimeError):
                process.__exit__(None, None, None)
        self.redis.stop()
        self.pg.destroy()

    # -- killing and restarting

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def start_again(self, name: str, wait: bool = True) -> None:
        process = self.processes[name]
        process.start()
        self.restarts[_kind(name)] += 1
        if wait and name in self.targets:
            process.wait_healthy(self.targets[name], timeout=HEALTH_TIMEOUT)

    def restart(self, name: str, downtime: float = 0.0) -> None:
        self.kill(name)
        time.sleep(downtime)
        self.start_again(name)

    def crash_postgres(self, downtime: float = 0.0) -> None:
        """SIGKILL Postgres (every backend too) and start it on the same data."""
        self.pg.kill()
        time.sleep(downtime)
        self.pg.start(timeout=60)
        self.restarts["postgres"] += 1

    def crash_redis(self, downtime: float = 0.0) -> None:
        """SIGKILL Redis and start it empty (it never persists)."""
        self.redis.kill()
        time.sleep(downtime)
        self.redis.start()
        self.restarts["redis"] += 1

    def ensure_stores(self) -> None:
        """Start Postgres and Redis again if a failed restart left either down."""
        for store in (self.pg, self.redis):
            if not store.is_running():
                store.start()

    def unexpected_exits(self, restart: bool = True) -> list[Exit]:
        """Processes that died on their own (everything killed here is started again at once)."""
        found = []
        for name, process in self.processes.items():
            if process.returncode is not None:
                found.append(Exit(name, process.returncode, process.log_tail(30)))
                if restart:
                    with contextlib.suppress(ServiceFailed):
                        self.start_again(name)
        return found

    # -- observing

    def leader_token(self) -> str | None:
        """The token in the scheduler leader key, or None (no leader, or Redis is down)."""
        client = redis.Redis.from_url(self.redis.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            value = client.get(self.keys.leader)
        except redis.RedisError:
            return None
        finally:
            client.close()
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def holder_of(self, token: str) -> str | None:
        """Which scheduler logged that it leads with this token (tokens are per process)."""
        for name in self.schedulers:
            with contextlib.suppress(OSError):
                if token in self.processes[name].log_path.read_text(errors="replace"):
                    return name
        return None

    def leader(self) -> str | None:
        token = self.leader_token()
        return None if token is None else self.holder_of(token)

    def db_now(self) -> dt.datetime:
        now = asyncio.run(_fetchval(self.pg.url, "SELECT clock_timestamp()"))
        assert isinstance(now, dt.datetime)
        return now

    def wait_workers(self, names: list[str], since: dt.datetime, timeout: float = 30.0) -> None:
        """Until each named worker has (re)connected to a gateway after `since`."""
        ids = [self.worker_ids[n] for n in names]
        deadline = time.monotonic() + timeout
        while True:
            connected = asyncio.run(
                _fetchval(
                    self.pg.url,
                    "SELECT count(*) FROM workers WHERE worker_id = ANY($1) AND status <> 4 AND connected_at >= $2",
                    ids,
                    since,
                )
            )
            if connected == len(ids):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.processes[n].log_tail(15)}" for n in names)
                raise RuntimeError(f"workers {names} did not connect within {timeout:.0f}s\n{tails}")
            time.sleep(0.1)


def _kind(name: str) -> str:
    """`worker-2` -> `worker`, `scheduler-1` -> `scheduler`; services keep their names."""
    base, _, number = name.rpartition("-")
    return base if number.isdigit() else name


def _listen() -> str:
    return f"127.0.0.1:{free_port()}"


async def _fetchval(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
