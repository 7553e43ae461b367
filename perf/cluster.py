"""The stack perf drills and chaos stand on, and how to tell which scheduler leads it.

A thin use of dispatchd.devtools.stack: `topology()` is the platform they run (private
Postgres and Redis, a control plane, a worker gateway, scheduler replicas, workers, each its
own process and killable by name); Postgres keeps committed data across SIGKILL
(synchronous_commit stays on), Redis never persists, so restarting it empties it, as losing
a cache-only Redis would. The leader is found as the scheduler that logged the token held
in the leader key (tokens are per process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import redis

from dispatchd.devtools.stack import Stack, Topology, Workers
from dispatchd.platform.queues import Keys
from perf.evidence import ROOT

PREFIX = "dispatchd"
HEARTBEAT_SECONDS = 1.0
KEYS = Keys(PREFIX)


def topology(
    workers: int = 1,
    concurrency: int = 4,
    schedulers: int = 2,
    handlers: tuple[str, ...] = ("--builtins",),
    settings: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> Topology:
    """Short heartbeats and grace periods, so lost work comes back within seconds."""
    group = Workers(
        workers, handlers, concurrency=concurrency, heartbeat_seconds=HEARTBEAT_SECONDS, grace_seconds=2,
        env=dict(worker_env or {}),
    )  # fmt: skip
    return Topology(
        schedulers=schedulers,
        workers=(group,),
        redis_prefix=PREFIX,
        settings={
            "DISPATCHD_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
            "DISPATCHD_LOG_LEVEL": "INFO",
            "GRPC_ENABLE_FORK_SUPPORT": "false",
            "PYTHONPATH": str(ROOT),  # handler modules such as perf.chaos_handlers
            **(settings or {}),
        },
    )


def leader_token(stack: Stack) -> str | None:
    """The token in the scheduler leader key, or None (no leader, or Redis is down)."""
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        value = client.get(KEYS.leader)
    except redis.RedisError:
        return None
    finally:
        client.close()
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def holder_of(stack: Stack, token: str) -> str | None:
    """Which scheduler logged that it leads with this token."""
    for name in stack.schedulers:
        with contextlib.suppress(OSError):
            if token in stack.processes[name].log_path.read_text(errors="replace"):
                return name
    return None


def leader(stack: Stack) -> str | None:
    token = leader_token(stack)
    return None if token is None else holder_of(stack, token)
