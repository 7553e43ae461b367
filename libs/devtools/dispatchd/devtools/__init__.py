"""Developer tooling: throwaway Postgres/Redis instances for `make up` and the test suite."""

from __future__ import annotations

from dispatchd.devtools.stores import (
    PostgresInstance,
    RedisInstance,
    find_postgres_bin,
    find_redis_server,
    free_port,
    reachable_postgres,
    reachable_redis,
)

__all__ = [
    "PostgresInstance",
    "RedisInstance",
    "find_postgres_bin",
    "find_redis_server",
    "free_port",
    "reachable_postgres",
    "reachable_redis",
]
