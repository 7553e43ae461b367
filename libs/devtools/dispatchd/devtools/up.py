"""`make up`: the whole platform on this machine, in the foreground.

    python -m dispatchd.devtools.up [--data-dir .dispatchd] [--no-worker] [--workers N] [--check] [--secure]

1. Stores: `DATABASE_URL` / `REDIS_URL` when set and reachable; otherwise a private
   Postgres (port `DISPATCHD_LOCAL_PG_PORT`, default 54329) and Redis (port
   `DISPATCHD_LOCAL_REDIS_PORT`, default 63799) keeping their data under `--data-dir`
   between runs.
2. Migrations, then each service as its own process, exactly as in production: control
   plane, worker gateway, two scheduler replicas (leader and standby) and N workers
   (shell + builtins). Listen addresses come from the usual `DISPATCHD_*_LISTEN`
   variables; the standby scheduler uses `DISPATCHD_LOCAL_STANDBY_SCHEDULER_LISTEN`
   (default: the port after `DISPATCHD_SCHEDULER_LISTEN`).
3. Output of each process goes to `<data-dir>/logs/<name>.log` (rewritten every run).

Ctrl-C or SIGTERM stops everything in reverse order: SIGTERM, then SIGKILL after 15 s,
including the private Postgres and Redis.

When a process dies on its own: a service or worker is reported with the tail of its
log and the rest keeps running, so you can read what happened while other replicas (the
standby scheduler) carry on; restart `make up` to bring it back. A private store dying
is fatal: nothing can work without it, so everything is stopped and the exit status is 1.

`--secure` (or DISPATCHD_SECURE=1) turns on JWT auth, TLS 1.3 and required client
certificates, with a development CA, signing key and tokens under `<data-dir>/secure/`
(see dispatchd.devtools.secure); `source <data-dir>/secure/env.sh` points dispatchctl at it.

`--check` starts everything, runs one `builtin.echo` job through it, prints the
submit-to-succeeded latency, stops everything and exits 0 (or 1): what CI and the tests
use to prove that `make up` works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import asyncpg
import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools import secure as secure_mode
from dispatchd.devtools.stores import PostgresInstance, RedisInstance, reachable_postgres, reachable_redis
from dispatchd.platform.config import Settings
from dispatchd.platform.db import asyncpg_dsn
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc

STOP_TIMEOUT = 15.0
HEALTH_TIMEOUT = 60.0
WORKER_TIMEOUT = 30.0
CHECK_TIMEOUT = 60.0
DEFAULT_PG_PORT = 54329
DEFAULT_REDIS_PORT = 63799


class LaunchError(Exception):
    """Startup cannot go on; the message says why (with a log tail where there is one)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived."""


def say(message: str) -> None:
    print(f"[up] {message}", flush=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    <no output>"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    <no output>"


# --------------------------------------------------------------------------- processes


class Child:
    """One service or worker in its own process group, output to `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, listen: str | None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.listen = listen
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reported = False
        self._log: IO[bytes] | None = None
        # How to reach `listen` when the stack is secured (TLS and a client certificate).
        self.security: ClientSecurity | None = None

    def start(self) -> None:
        if self.listen is not None and not port_free(self.listen):
            raise LaunchError(
                f"{self.name}: {self.listen} is already in use (another `make up` still running?); "
                "stop it or choose another address with the DISPATCHD_*_LISTEN variables"
            )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, what: str) -> LaunchError:
        return LaunchError(f"{self.name} {what}; last lines of {self.log_path}:\n{tail(self.log_path)}")

    def wait_serving(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Until grpc.health.v1 says SERVING at `listen`."""
        assert self.listen is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise self.failure(f"exited with status {code} before becoming healthy")
            # A fresh channel each time: a long-lived one backs off for seconds after a refusal.
            with (self.security or ClientSecurity()).sync_channel(
                self.listen, options=[("grpc.enable_http_proxy", 0)]
            ) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
            if time.monotonic() > deadline:
                raise self.failure(f"not SERVING at {self.listen} within {timeout:.0f}s ({last})")
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f}s; killing it")
                # The whole group, while its leader is unreaped (so the id cannot be reused).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def port_free(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the gRPC server binds: sockets in TIME_WAIT do not count, listeners do.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- the stack


@dataclass
class Options:
    data_dir: Path
    workers: int
    check: bool
    control_plane: str
    gateway: str
    schedulers: list[str]
    pg_port: int
    redis_port: int
    secure: bool = False


@dataclass
class Stack:
    options: Options
    database_url: str = ""
    redis_url: str = ""
    stores: list[PostgresInstance | RedisInstance] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    started_at: dt.datetime | None = None
    secure: secure_mode.SecureSetup | None = None

    @property
    def log_dir(self) -> Path:
        return self.options.data_dir / "logs"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = self._postgres()
        self.redis_url = self._redis()
        self._migrate()
        self.started_at = asyncio.run(_database_now(self.database_url))
        opts = self.options
        if opts.secure:
            worker_ids = [f"worker-{i + 1}" for i in range(opts.workers)]
            self.secure = secure_mode.prepare(opts.data_dir / "secure", worker_ids)
            say(f"secure mode: auth, TLS 1.3 and client certificates on (material in {self.secure.root})")
        services = [
            ("control-plane", "dispatchd.control_plane.main", opts.control_plane, "DISPATCHD_CONTROL_PLANE_LISTEN"),
            ("worker-gateway", "dispatchd.worker_gateway.main", opts.gateway, "DISPATCHD_GATEWAY_LISTEN"),
        ]
        services += [
            (f"scheduler-{i + 1}", "dispatchd.scheduler.main", listen, "DISPATCHD_SCHEDULER_LISTEN")
            for i, listen in enumerate(opts.schedulers)
        ]
        # Start all, then wait: they come up in parallel.
        for name, module, listen, variable in services:
            child = Child(name, [sys.executable, "-m", module], self._env({variable: listen}), self.log_dir, listen)
            child.security = self.secure.cli() if self.secure else None
            self.children.append(child)
            child.start()
        for child in self.children:
            child.wait_serving()
            say(f"{child.name} is serving on {child.listen}")
        for i in range(opts.workers):
            argv = [
                sys.executable, "-m", "dispatchd.sdk.cli",
                "--enable-shell", "--builtins",
                "--target", opts.gateway,
                "--grace-seconds", str(STOP_TIMEOUT - 5),
            ]  # fmt: skip
            if self.secure is not None:
                argv += self.secure.worker_args(f"worker-{i + 1}")
            child = Child(f"worker-{i + 1}", argv, self._env({}), self.log_dir, None)
            self.children.append(child)
            child.start()
        if opts.workers:
            self._wait_workers()

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DISPATCHD_CONTROL_PLANE_LISTEN": self.options.control_plane,
            "DISPATCHD_GATEWAY_LISTEN": self.options.gateway,
            **(self.secure.server_env() if self.secure else {}),
            **extra,
        }

    def _postgres(self) -> str:
        url = os.environ.get("DATABASE_URL")
        if url:
            if asyncio.run(reachable_postgres(url)):
                say(f"postgres: using DATABASE_URL ({_redact(url)})")
                return url
            say(f"postgres: DATABASE_URL ({_redact(url)}) is not reachable; starting a private one")
        port = self.options.pg_port
        if not port_free(f"127.0.0.1:{port}"):
            raise LaunchError(
                f"port {port} for the private postgres is in use (another `make up`?); "
                "stop it, or set DISPATCHD_LOCAL_PG_PORT or DATABASE_URL"
            )
        instance = PostgresInstance(self.options.data_dir / "postgres", port=port, fast=self.options.check)
        say(f"postgres: starting a private server on 127.0.0.1:{port} (data in {instance.data_dir})")
        self.stores.append(instance)
        instance.start()
        return instance.url

    def _redis(self) -> str:
        url = os.environ.get("REDIS_URL")
        if url:
            if asyncio.run(reachable_redis(url)):
                say(f"redis: using REDIS_URL ({_redact(url)})")
                return url
            say(f"redis: REDIS_URL ({_redact(url)}) is not reachable; starting a private one")
        port = self.options.redis_port
        if not port_free(f"127.0.0.1:{port}"):
            raise LaunchError(
                f"port {port} for the private redis is in use (another `make up`?); "
                "stop it, or set DISPATCHD_LOCAL_REDIS_PORT or REDIS_URL"
            )
        instance = RedisInstance(self.options.data_dir / "redis", port=port, persist=not self.options.check)
        say(f"redis: starting a private server on 127.0.0.1:{port} (data in {instance.data_dir})")
        self.stores.append(instance)
        instance.start()
        return instance.url

    def _migrate(self) -> None:
        # A separate process: Alembic runs its own event loop and configures logging globally.
        log_path = self.log_dir / "migrate.log"
        argv = [sys.executable, "-m", "dispatchd.platform.migrate", "--database-url", self.database_url]
        with open(log_path, "wb") as log:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=300)
        if result.returncode != 0:
            raise LaunchError(f"migrations failed ({result.returncode}); {log_path}:\n{tail(log_path)}")
        say("database schema is up to date")

    def _wait_workers(self) -> None:
        """Until every worker we started has registered with the gateway (it is in Postgres)."""
        assert self.started_at is not None
        deadline = time.monotonic() + WORKER_TIMEOUT
        workers = [c for c in self.children if c.listen is None]
        while True:
            for child in workers:
                if not child.running():
                    code = child.proc.returncode if child.proc else None
                    raise child.failure(f"exited with status {code} before connecting")
            connected = asyncio.run(_connected_workers(self.database_url, self.started_at))
            if connected >= len(workers):
                say(f"{connected} worker(s) connected to the gateway")
                return
            if time.monotonic() > deadline:
                raise workers[0].failure(f"not connected to the gateway within {WORKER_TIMEOUT:.0f}s")
            time.sleep(0.1)

    def dead_store(self) -> PostgresInstance | RedisInstance | None:
        return next((s for s in self.stores if not s.is_running()), None)

    def report_dead_children(self) -> None:
        for child in self.children:
            if not child.reported and not child.running():
                child.reported = True
                code = child.proc.returncode if child.proc else None
                say(
                    f"{child.name} exited unexpectedly with status {code}; the rest keeps running "
                    f"(restart `make up` to bring it back). Last lines of {child.log_path}:\n{tail(child.log_path)}"
                )

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.running():
                say(f"stopping {child.name}")
            child.stop()
        for store in reversed(self.stores):
            say(f"stopping private {store.name}")
            store.stop(timeout=STOP_TIMEOUT)

    def banner(self) -> str:
        opts = self.options
        target = "" if opts.control_plane == "127.0.0.1:50051" else f" --target {opts.control_plane}"
        ctl = f".venv/bin/dispatchctl{target}"
        lines = [
            "",
            "dispatchd is up",
            f"  control plane    {opts.control_plane}",
            f"  worker gateway   {opts.gateway}",
            f"  schedulers       {', '.join(opts.schedulers)} (one leads, one stands by)",
            f"  workers          {opts.workers} (job types: shell, builtin.*)",
            f"  postgres         {_redact(self.database_url)}",
            f"  redis            {_redact(self.redis_url)}",
            f"  logs             {self.log_dir}/",
            "",
            *(
                [f"  security         auth + TLS 1.3 + client certificates; first: source {self.secure.env_file}"]
                if self.secure
                else []
            ),
            "Try:",
            f"  {ctl} run -- echo hello",
            f"  {ctl} submit builtin.echo --payload hi --wait",
            f"  {ctl} list",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


async def _database_now(url: str) -> dt.datetime:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        now: dt.datetime = await conn.fetchval("SELECT clock_timestamp()")
        return now
    finally:
        await conn.close()


async def _connected_workers(url: str, since: dt.datetime) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM workers WHERE status <> 4 AND connected_at >= $1", since
        )
        return count
    finally:
        await conn.close()


# --------------------------------------------------------------------------- check


def run_check(control_plane: str, security: ClientSecurity | None = None) -> float:
    """Submit one builtin.echo job and wait for it; returns submit-to-succeeded seconds."""
    payload = b"dispatchd up --check"
    security = security or ClientSecurity()
    metadata = security.metadata()
    with security.sync_channel(control_plane, options=[("grpc.enable_http_proxy", 0)]) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        started = time.perf_counter()
        request = job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=payload)
        job = jobs.SubmitJob(request, timeout=10, metadata=metadata).job
        wait = duration_pb2.Duration(seconds=int(CHECK_TIMEOUT))
        reply = jobs.WaitJob(
            job_service_pb2.WaitJobRequest(job_id=job.job_id, timeout=wait),
            timeout=CHECK_TIMEOUT + 5,
            metadata=metadata,
        )
        job = reply.job
        elapsed = time.perf_counter() - started
    if job.status != common_pb2.JOB_STATUS_SUCCEEDED or job.result != payload:
        status = common_pb2.JobStatus.Name(job.status)
        raise LaunchError(f"check job {job.job_id} ended {status} ({job.error_message or 'no error'})")
    return elapsed


# --------------------------------------------------------------------------- main


def _next_port(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}"


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m dispatchd.devtools.up", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".dispatchd"), help="default %(default)s")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="workers to start (default 1)")
    parser.add_argument("--no-worker", action="store_true", help="start no worker (same as --workers 0)")
    parser.add_argument("--check", action="store_true", help="run one job through everything, stop, exit 0/1")
    parser.add_argument(
        "--secure",
        action="store_true",
        default=os.environ.get("DISPATCHD_SECURE", "").lower() in ("1", "true", "yes"),
        help="JWT auth, TLS 1.3 and client certificates on (env DISPATCHD_SECURE=1)",
    )
    args = parser.parse_args(argv)
    workers = 0 if args.no_worker else args.workers
    if workers < 0:
        parser.error("--workers must not be negative")
    if args.check and workers == 0:
        parser.error("--check needs a worker to run its job")
    settings = Settings()
    standby = os.environ.get("DISPATCHD_LOCAL_STANDBY_SCHEDULER_LISTEN") or _next_port(settings.scheduler_listen)
    return Options(
        data_dir=args.data_dir.absolute(),
        workers=workers,
        check=args.check,
        control_plane=settings.control_plane_listen,
        gateway=settings.gateway_listen,
        schedulers=[settings.scheduler_listen, standby],
        pg_port=int(os.environ.get("DISPATCHD_LOCAL_PG_PORT") or DEFAULT_PG_PORT),
        redis_port=int(os.environ.get("DISPATCHD_LOCAL_REDIS_PORT") or DEFAULT_REDIS_PORT),
        secure=args.secure,
    )


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Ctrl-C / SIGTERM interrupt whatever we are doing, once; the stop that follows is not interrupted."""
    state = {"fired": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        if state["fired"]:
            say("still stopping; please wait")
            return
        state["fired"] = True
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(options: Options) -> int:
    stack = Stack(options)
    with _signals_interrupt():
        try:
            stack.start()
            if options.check:
                latency = run_check(options.control_plane, stack.secure.cli() if stack.secure else None)
                say(f"check passed: builtin.echo went from submit to SUCCEEDED in {latency * 1000:.0f} ms")
                return 0
            print(stack.banner(), flush=True)
            while True:
                store = stack.dead_store()
                if store is not None:
                    say(f"private {store.name} died; last lines of {store.log_path}:\n{tail(store.log_path)}")
                    return 1
                stack.report_dead_children()
                time.sleep(0.5)
        except Interrupted as exc:
            say(f"{exc}: stopping everything")
            return 0 if not options.check else 1
        except grpc.RpcError as exc:
            say(f"error: the control plane answered {exc.code().name}: {exc.details()}")
            return 1
        except (LaunchError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            say(f"error: {exc}")
            return 1
        except Exception as exc:  # anything else: still stop what we started, and say what broke
            say(f"error: {type(exc).__name__}: {exc}")
            return 1
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_options(argv)))


if __name__ == "__main__":
    main()
