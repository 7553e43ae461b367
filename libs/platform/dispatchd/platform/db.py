"""Postgres connection pool (asyncpg). Hot paths use raw SQL through it.

Invariant: no code leaves session state on a pooled connection (no SET, LISTEN, advisory lock
or cursor outside a transaction), so a released connection is not reset with a query: asyncpg
still rolls back a transaction left open, and this saves a round trip (`SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) on every release, i.e. per
statement run through the pool. Each connection keeps asyncpg's prepared-statement cache (its
default `statement_cache_size`, 100): the hot statements are prepared once per connection.

Every connection plans each execution for its own arguments (`plan_cache_mode =
force_custom_plan`). Postgres' default switches a prepared statement to a generic plan after
five executions, and a generic plan cannot know how many ids an `= ANY($1)` array holds: for
the hot statements (claim, settle: 1 to 256 ids each) it guessed a share of the table and
scanned it. Measured with pg_stat_statements at saturation (single submits, 2,000 queued):
generic, claim 4.7-6.2 ms and settle 5.3 ms per call of ~10 jobs, Postgres CPU 1.05-1.2 ms per
job, 816-881 jobs/s; planned per call, claim 0.7-1.0 and settle 0.6-0.7 ms, Postgres CPU
0.30-0.33 ms per job, ~1,580-1,650 jobs/s. Planning each call costs the simple statements a
little (the submit INSERT 0.46-0.51 -> 0.9 ms per call of ~10 jobs). A custom plan still trusts
the statistics, which lag a queue's status by up to a minute: the status guards of statements
that name their rows by id are `guards.checked`, so no plan finds those rows through a status
index (tests/integration/test_query_plans.py).
"""

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without a reset query (see the module docstring); asyncpg has ended any transaction."""


# Per connection, at startup (see the module docstring).
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(url: str, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    kwargs["server_settings"] = {**SERVER_SETTINGS, **kwargs.get("server_settings", {})}
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        **kwargs,
    )
    assert pool is not None
    return pool
