"""Private, throwaway Postgres and Redis servers for local development and tests.

Both servers run as child processes of the caller in their own session (process group),
listen on 127.0.0.1 only and keep all state under a caller-chosen directory, so several
instances (e.g. parallel test runs) can coexist and `make up` can restart with the data
it persisted last time. Modules: discovery (binaries), ports, server (shared process
bookkeeping), placement (where postgres data may live), postgres, replica (a streaming
replica of a postgres, promotable), redis, probes.
"""

from __future__ import annotations

from dispatchd.devtools.stores.discovery import find_postgres_bin, find_redis_server
from dispatchd.devtools.stores.ports import free_port, port_free
from dispatchd.devtools.stores.postgres import PostgresInstance
from dispatchd.devtools.stores.probes import reachable_postgres, reachable_redis
from dispatchd.devtools.stores.redis import RedisInstance
from dispatchd.devtools.stores.replica import ReplicaInstance

__all__ = [
    "PostgresInstance",
    "RedisInstance",
    "ReplicaInstance",
    "find_postgres_bin",
    "find_redis_server",
    "free_port",
    "port_free",
    "reachable_postgres",
    "reachable_redis",
]
