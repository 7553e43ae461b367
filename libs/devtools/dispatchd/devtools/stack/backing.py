"""The stores under a stack: a given Postgres/Redis, or private servers it starts, then migrations.

Invariant: `database_url` and `redis_url` are set (and the schema is current) once
`start()` returns; a private server this object started is stopped by `stop()`, and its
data deleted unless the topology keeps it (`make up` does, between runs).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dispatchd.devtools.stack.topology import Stores
from dispatchd.devtools.stores import PostgresInstance, RedisInstance, port_free, reachable_postgres, reachable_redis

STOP_TIMEOUT = 15.0
MIGRATE_TIMEOUT = 300.0
Server = TypeVar("Server", PostgresInstance, RedisInstance)
Probe = Callable[[str], Coroutine[Any, Any, bool]]


def redact(url: str) -> str:
    """`url` without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class Backing:
    def __init__(self, spec: Stores, directory: Path, log_dir: Path, say: Callable[[str], None]) -> None:
        self.spec = spec
        self.directory = directory
        self.log_dir = log_dir
        self.say = say
        self.postgres: PostgresInstance | None = None
        self.redis: RedisInstance | None = None
        self.database_url = ""
        self.redis_url = ""

    @property
    def private(self) -> list[PostgresInstance | RedisInstance]:
        return [s for s in (self.postgres, self.redis) if s is not None]

    def start(self) -> None:
        spec = self.spec
        given = self._given("postgres", "DATABASE_URL", spec.database_url, reachable_postgres)
        if given is None:
            self.postgres = PostgresInstance(self.directory / "postgres", port=spec.pg_port, fast=spec.fast_postgres)
            given = self._start_private(self.postgres, spec.pg_port)
        self.database_url = given
        given = self._given("redis", "REDIS_URL", spec.redis_url, reachable_redis)
        if given is None:
            self.redis = RedisInstance(self.directory / "redis", port=spec.redis_port, persist=spec.persist_redis)
            given = self._start_private(self.redis, spec.redis_port)
        self.redis_url = given
        if spec.migrate:
            self._migrate()

    def _migrate(self) -> None:
        # Its own process: Alembic runs an event loop and configures logging globally.
        log_path = self.log_dir / "migrate.log"
        argv = [sys.executable, "-m", "dispatchd.platform.migrate", "--database-url", self.database_url]
        with open(log_path, "wb") as log:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=MIGRATE_TIMEOUT)
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"migrations failed ({done.returncode}); {log_path}:\n{tail}")
        self.say("database schema is up to date")

    def _given(self, kind: str, label: str, url: str | None, probe: Probe) -> str | None:
        if not url:
            return None
        if not self.spec.fallback:
            return url
        if asyncio.run(probe(url)):
            self.say(f"{kind}: using {label} ({redact(url)})")
            return url
        self.say(f"{kind}: {label} ({redact(url)}) is not reachable; starting a private one")
        return None

    def _start_private(self, server: PostgresInstance | RedisInstance, fixed_port: int | None) -> str:
        if fixed_port is not None and not port_free(f"127.0.0.1:{fixed_port}"):
            raise RuntimeError(
                f"port {fixed_port} for the private {server.name} is in use (another `make up`?); "
                f"stop it, or choose another port or give a {server.name} URL"
            )
        self.say(f"{server.name}: starting a private server on 127.0.0.1:{server.port} (data in {server.data_dir})")
        server.start()
        return server.url

    def dead(self) -> PostgresInstance | RedisInstance | None:
        """A private server that is not running (it died, or a crash drill left it down)."""
        return next((s for s in self.private if not s.is_running()), None)

    def crash_postgres(self, downtime: float = 0.0) -> None:
        """SIGKILL Postgres (every backend too) and start it on the same data (crash recovery)."""
        postgres = self._require(self.postgres)
        postgres.kill()
        time.sleep(downtime)
        postgres.start(timeout=60)

    def crash_redis(self, downtime: float = 0.0) -> None:
        """SIGKILL Redis and start it again (empty unless it persists)."""
        redis = self._require(self.redis)
        redis.kill()
        time.sleep(downtime)
        redis.start()

    def ensure_running(self) -> None:
        """Start again a private server that a failed restart left down."""
        for server in self.private:
            if not server.is_running():
                server.start()

    def stop(self) -> None:
        if self.redis is not None:
            self.say("stopping private redis")
            self.redis.stop(timeout=STOP_TIMEOUT)
        if self.postgres is not None:
            self.say("stopping private postgres")
            if self.spec.keep_data:
                self.postgres.stop(timeout=STOP_TIMEOUT)
            else:
                self.postgres.destroy()

    @staticmethod
    def _require(server: Server | None) -> Server:
        if server is None:
            raise RuntimeError("that store was given by URL; only private servers can be crashed")
        return server
