"""Whether a Postgres or Redis URL answers now (used to decide between a given and a private store)."""

from __future__ import annotations

import asyncio


def _asyncpg_dsn(url: str) -> str:
    # Accept SQLAlchemy-style schemes (postgresql+asyncpg://) like dispatchd.platform.db.
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


async def reachable_postgres(url: str, timeout: float = 2.0) -> bool:
    """Whether `SELECT 1` succeeds against `url` within `timeout` seconds."""
    import asyncpg

    async def probe() -> bool:
        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=timeout)
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close(timeout=timeout)

    try:
        return await asyncio.wait_for(probe(), timeout)
    except Exception:  # any failure (refused, auth, missing db, timeout) means "no"
        return False


async def reachable_redis(url: str, timeout: float = 2.0) -> bool:
    """Whether Redis at `url` answers PING within `timeout` seconds."""
    import redis.asyncio

    client = redis.asyncio.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except Exception:  # refused, auth, timeout ... all mean "not usable"
        return False
    finally:
        await client.aclose()
