"""Postgres connection pool (asyncpg). Hot paths use raw SQL through it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


def asyncpg_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+asyncpg://) as well as plain ones."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def sqlalchemy_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return "postgresql+asyncpg://" + rest if scheme.startswith("postgres") else url


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        **kwargs,
    )
    assert pool is not None
    return pool
