"""`make up`: the whole platform on this machine, in the foreground.

    python -m dispatchd.devtools.up [--data-dir .dispatchd] [--no-worker] [--workers N] [--check] [--secure]

1. Stores: `DATABASE_URL` / `REDIS_URL` when set and reachable; otherwise a private
   Postgres (port `DISPATCHD_LOCAL_PG_PORT`, default 54329) and Redis (port
   `DISPATCHD_LOCAL_REDIS_PORT`, default 63799) keeping their data under `--data-dir`
   between runs.
2. Migrations, then each service as its own process, exactly as in production: control
   plane, worker gateway, two scheduler replicas (leader and standby) and N workers
   (shell + builtins), and the web dashboard. Listen addresses come from the usual
   `DISPATCHD_*_LISTEN` variables (the dashboard's: `DISPATCHD_DASHBOARD_LISTEN`, default
   127.0.0.1:8080); the standby scheduler uses `DISPATCHD_LOCAL_STANDBY_SCHEDULER_LISTEN`
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
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from dispatchd.devtools import secure as secure_mode
from dispatchd.devtools.stack import CONTROL_PLANE, GATEWAY, Stack, Stores, Topology, Workers, redact, run_check
from dispatchd.devtools.stack.dashboard import NAME as DASHBOARD
from dispatchd.platform.config import Settings

STOP_TIMEOUT = 15.0
DEFAULT_PG_PORT = 54329
DEFAULT_REDIS_PORT = 63799


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
    dashboard: str = "127.0.0.1:8080"

    def topology(self) -> Topology:
        """The stack `make up` runs: shell + builtin workers, fixed addresses, stores kept between runs."""
        security = None
        if self.secure:
            worker_ids = [f"worker-{i + 1}" for i in range(self.workers)]
            security = secure_mode.prepare(self.data_dir / "secure", worker_ids)
            say(f"secure mode: auth, TLS 1.3 and client certificates on (material in {security.root})")
        workers = Workers(self.workers, ("--enable-shell", "--builtins"), grace_seconds=STOP_TIMEOUT - 5)
        return Topology(
            schedulers=len(self.schedulers),
            workers=(workers,) if self.workers else (),
            stores=Stores(
                database_url=os.environ.get("DATABASE_URL"),
                redis_url=os.environ.get("REDIS_URL"),
                fallback=True,
                pg_port=self.pg_port,
                redis_port=self.redis_port,
                fast_postgres=self.check,
                persist_redis=not self.check,
                keep_data=True,
            ),
            security=security,
            dashboard=True,
            listen={
                DASHBOARD: self.dashboard,
                CONTROL_PLANE: self.control_plane,
                GATEWAY: self.gateway,
                **{f"scheduler-{i + 1}": listen for i, listen in enumerate(self.schedulers)},
            },
        )


def banner(stack: Stack, options: Options) -> str:
    target = "" if options.control_plane == "127.0.0.1:50051" else f" --target {options.control_plane}"
    ctl = f".venv/bin/dispatchctl{target}"
    security = stack.topology.security
    sign_in = ""
    if isinstance(security, secure_mode.SecureSetup):
        sign_in = f" (sign in with the token in {security.admin_token})"
    lines = [
        "",
        "dispatchd is up",
        f"  control plane    {options.control_plane}",
        f"  worker gateway   {options.gateway}",
        f"  schedulers       {', '.join(options.schedulers)} (one leads, one stands by)",
        f"  workers          {options.workers} (job types: shell, builtin.*)",
        f"  dashboard        {stack.dashboard_url}{sign_in}",
        f"  postgres         {redact(stack.database_url)}",
        f"  redis            {redact(stack.redis_url)}",
        f"  logs             {stack.log_dir}/",
        "  metrics",
        *(f"    {name:<15}{url}" for name, url in stack.metrics_urls().items()),
        "",
        *(
            [f"  security         auth + TLS 1.3 + client certificates; first: source {security.env_file}"]
            if isinstance(security, secure_mode.SecureSetup)
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
        dashboard=os.environ.get("DISPATCHD_DASHBOARD_LISTEN") or "127.0.0.1:8080",
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


def watch(stack: Stack) -> int:
    """Until a private store dies (fatal: 1); a service or worker dying is reported, the rest runs on."""
    reported: set[str] = set()
    while True:
        store = stack.backing.dead()
        if store is not None:
            say(f"private {store.name} died; last lines of {store.log_path}:\n{tail(store.log_path)}")
            return 1
        for exit in stack.unexpected_exits(restart=False):
            if exit.name not in reported:
                reported.add(exit.name)
                log_path = stack.processes[exit.name].log_path
                say(
                    f"{exit.name} exited unexpectedly with status {exit.code}; the rest keeps running "
                    f"(restart `make up` to bring it back). Last lines of {log_path}:\n{tail(log_path)}"
                )
        time.sleep(0.5)


def run(options: Options) -> int:
    with _signals_interrupt():
        stack: Stack | None = None
        try:
            stack = Stack(options.topology(), options.data_dir, say=say)
            stack.start()
            if options.check:
                latency = run_check(options.control_plane, stack.client_security())
                say(f"check passed: builtin.echo went from submit to SUCCEEDED in {latency * 1000:.0f} ms")
                return 0
            print(banner(stack, options), flush=True)
            return watch(stack)
        except Interrupted as exc:
            say(f"{exc}: stopping everything")
            return 0 if not options.check else 1
        except grpc.RpcError as exc:
            say(f"error: the control plane answered {exc.code().name}: {exc.details()}")
            return 1
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            say(f"error: {exc}")
            return 1
        except Exception as exc:  # anything else: still stop what we started, and say what broke
            say(f"error: {type(exc).__name__}: {exc}")
            return 1
        finally:
            if stack is not None:
                stack.stop()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_options(argv)))


if __name__ == "__main__":
    main()
