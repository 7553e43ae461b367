"""Reaching the stores when a process starts: Postgres (the pool) and Redis (one PING).

Invariant: a store that cannot be reached within `CONNECT_TIMEOUT` raises `StoreUnreachable`,
whose message is ONE line naming the store, its address without any password and the error;
the processes turn it into that line on stderr and a non-zero exit, never a traceback, so the
last line of a crash-looping pod's log is its cause. Errors after a connection was made (a
failing query, a bad migration) are not this: they keep their tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from dispatchd.platform.db import asyncpg_dsn, create_pool

CONNECT_TIMEOUT = 10.0
# What failing to connect raises: refused or unroutable sockets, timeouts, and the servers'
# own refusals (authentication, unknown database) before any work was done.
POSTGRES_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
REDIS_CONNECT_ERRORS = (OSError, TimeoutError, redis.exceptions.RedisError)


def address(url: str) -> str:
    """`url` without its password (the user stays: it tells which credentials were used)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


class StoreUnreachable(Exception):
    """`store` (Postgres, Redis) at `url` could not be reached: `error` says why."""

    def __init__(self, store: str, url: str, error: BaseException) -> None:
        reason = " ".join(str(error).split()) or type(error).__name__
        super().__init__(f"cannot reach {store} at {address(url)}: {reason}")


@contextlib.asynccontextmanager
async def reaching(store: str, url: str, errors: tuple[type[BaseException], ...]) -> AsyncIterator[None]:
    """Within `CONNECT_TIMEOUT`, or StoreUnreachable; any of `errors` inside becomes one too."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            yield
    except errors as exc:
        raise StoreUnreachable(store, url, exc) from None


async def open_postgres(url: str, min_size: int, max_size: int) -> asyncpg.Pool:
    async with reaching("Postgres", url, POSTGRES_CONNECT_ERRORS):
        pool = await create_pool(url, min_size, max_size)
    return pool


async def check_postgres(url: str) -> None:
    """Connect once and hang up: what a short-lived program (migrate) asks before its work."""
    async with reaching("Postgres", url, POSTGRES_CONNECT_ERRORS):
        conn = await asyncpg.connect(asyncpg_dsn(url))
        await conn.close()


async def open_redis(url: str) -> aioredis.Redis:
    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        # The client connects lazily: without this a wrong REDIS_URL would surface only as
        # NOT_SERVING health later, far from its cause.
        async with reaching("Redis", url, REDIS_CONNECT_ERRORS):
            await client.ping()
    except StoreUnreachable:
        await client.aclose()
        raise
    return client
