"""`Platform` on a local `Stack`: components are processes on this machine, killed and started by name.

Services and workers map to the stack's processes of that kind in name order ("#0" is the
first); "postgres" and "redis" to the stack's private servers. `exec` runs the command on
this host with the component's environment: a service's or worker's own settings, or for
Postgres libpq's PG* variables and its binaries first on PATH (so `pg_dump` dumps the stack's
database), for Redis REDIS_URL and the redis binaries' directory.

Invariant: every blocking Stack call runs in a thread, so a drill's event loop keeps
measuring while a process starts or stops.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from dispatchd.devtools.drills.platform import POSTGRES, REDIS, WORKER, split
from dispatchd.devtools.stack import ServiceProcess, Stack, kind_of, service_process
from dispatchd.devtools.stores import PostgresInstance, RedisInstance

START_TIMEOUT = 60.0


def on_path(directory: Path) -> str:
    """PATH with `directory` first: the store's own client binaries win over any others."""
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


class CommandFailed(RuntimeError):
    """A command run through `exec` exited non-zero (the message has its stderr)."""


class LocalPlatform:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    # -- naming

    def names(self, kind: str) -> list[str]:
        """The stack's process names of `kind`, in their numeric order."""
        found = [name for name in self.stack.processes if kind_of(name) == kind]
        return sorted(found, key=lambda name: int(name.rpartition("-")[2]) if name[-1].isdigit() else 0)

    def _processes(self, component: str) -> list[ServiceProcess]:
        kind, ordinal = split(component)
        names = self.names(kind)
        if ordinal is not None:
            if ordinal >= len(names):
                raise ValueError(f"{component}: there are only {len(names)} replica(s) of {kind}")
            names = [names[ordinal]]
        return [self.stack.processes[name] for name in names]

    def _store(self, kind: str) -> PostgresInstance | RedisInstance:
        store = self.stack.postgres if kind == POSTGRES else self.stack.redis
        if store is None:
            raise RuntimeError(f"{kind} was given by URL; only the stack's private servers can be driven")
        return store

    # -- Platform

    async def stop(self, component: str, *, hard: bool = True) -> None:
        kind, _ = split(component)
        if kind in (POSTGRES, REDIS):
            store = self._store(kind)
            await asyncio.to_thread(store.kill if hard else store.stop)
            return
        for process in self._processes(component):
            await asyncio.to_thread(process.kill if hard else process.stop)

    async def start(self, component: str) -> None:
        kind, _ = split(component)
        if kind in (POSTGRES, REDIS):
            store = self._store(kind)
            await asyncio.to_thread(store.start, timeout=START_TIMEOUT)
            return
        stopped = [p.name for p in self._processes(component) if not p.is_running()]
        since = await asyncio.to_thread(self.stack.db_now)
        for name in stopped:
            await asyncio.to_thread(self.stack.start_again, name)
        workers = [name for name in stopped if kind_of(name) == WORKER]
        if workers:
            await asyncio.to_thread(self.stack.wait_workers, workers, since)

    async def scale(self, component: str, replicas: int) -> None:
        kind, ordinal = split(component)
        if ordinal is not None or kind in (POSTGRES, REDIS):
            raise ValueError(f"{component} cannot be scaled here (one private {kind}, or a single replica named)")
        names = self.names(kind)
        for name in names[replicas:]:
            await asyncio.to_thread(self.stack.processes[name].stop)
        for name in names[:replicas]:
            if not self.stack.processes[name].is_running():
                await self.start(f"{kind}#{names.index(name)}")
        for number in range(len(names) + 1, replicas + 1):
            await asyncio.to_thread(self._add, kind, f"{kind}-{number}")

    def _add(self, kind: str, name: str) -> None:
        """A new replica beyond the topology's: a worker on a gateway, or a service on a free port."""
        since = self.stack.db_now()
        if kind == WORKER:
            self.stack.add_worker(name)
            self.stack.wait_workers([name], since)
            return
        process = service_process(
            kind, self.stack.env, self.stack.log_dir, name=name, security=self.stack.client_security()
        )
        self.stack.processes[name] = process
        self.stack.targets[name] = process.address
        process.start()
        process.wait_healthy()

    async def exec(self, component: str, argv: Sequence[str]) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **self.environment(component)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            stderr = err.decode(errors="replace")
            raise CommandFailed(f"{list(argv)} for {component} exited {proc.returncode}: {stderr}")
        return out

    def environment(self, component: str) -> dict[str, str]:
        kind, _ = split(component)
        if kind == POSTGRES:
            postgres = self._store(POSTGRES)
            assert isinstance(postgres, PostgresInstance)
            return {
                "PGHOST": "127.0.0.1",
                "PGPORT": str(postgres.port),
                "PGUSER": "postgres",
                "PGDATABASE": postgres.database,
                "PATH": on_path(postgres.bin_dir),
            }
        if kind == REDIS:
            redis = self._store(REDIS)
            assert isinstance(redis, RedisInstance)
            return {"REDIS_URL": redis.url, "PATH": on_path(Path(redis.binary).parent)}
        return dict(self._processes(component)[0].env)

    def address(self, component: str, port: str = "grpc") -> str:
        kind, _ = split(component)
        if kind in (POSTGRES, REDIS):
            return f"127.0.0.1:{self._store(kind).port}"
        process = self._processes(component)[0]
        if port == "metrics" and process.metrics is not None:
            return process.metrics
        if port == "grpc":
            return process.address
        raise ValueError(f"{component} has no {port!r} port here")


__all__ = ["CommandFailed", "LocalPlatform"]
