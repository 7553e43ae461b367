"""The two questions a launcher asks Postgres: what time is it there, and which workers connected since."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import asyncpg

from dispatchd.platform.db import asyncpg_dsn
from dispatchd.v1.worker_service_pb2 import WORKER_STATUS_OFFLINE


async def _fetchval(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def database_now(url: str) -> dt.datetime:
    """The database's clock: worker connection times are stamped by it, not by ours."""
    now = asyncio.run(_fetchval(url, "SELECT clock_timestamp()"))
    assert isinstance(now, dt.datetime)
    return now


def connected_workers(url: str, worker_ids: Sequence[str], since: dt.datetime) -> int:
    """How many of `worker_ids` are connected to a gateway with a connection made after `since`."""
    count = asyncio.run(
        _fetchval(
            url,
            "SELECT count(*) FROM workers WHERE worker_id = ANY($1) AND status <> $2 AND connected_at >= $3",
            list(worker_ids),
            WORKER_STATUS_OFFLINE,
            since,
        )
    )
    assert isinstance(count, int)
    return count
