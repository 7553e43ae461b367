"""Postgres connection pool (asyncpg). Hot paths use raw SQL through it.

Invariant: no code leaves session state on a pooled connection (no SET, LISTEN, advisory lock
or cursor outside a transaction), so a released connection is not reset with a query: asyncpg
still rolls back a transaction left open, and this saves a round trip (`SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) on every release, i.e. per
statement run through the pool. Each connection keeps asyncpg's prepared-statement cache (its
default `statement_cache_size`, 100): the hot statements are prepared once per connection.

Every connection plans each execution for its own arguments (`plan_cache_mode =
force_custom_plan`). Postgres' default switches a prepared statement to a generic plan after
five executions, and for the hot statements that plan was ruinous: they select by an array of
ids (1 to 256 of them) *and* a status whose distribution changes by the second, while the
statistics that price the status indexes are those of the last ANALYZE (a queue of thousands
looked like one row). The generic claim then walked every active job through
`jobs_status_created_idx` and every queued execution through `executions_queued_idx` instead of
probing the primary keys: measured with pg_stat_statements at saturation (single submits,
2,000 queued), claim 4.7 ms and settle 5.3 ms per call of ~10 jobs; planned per call, 1.0 and
0.6 ms; Postgres CPU per job 1.05 -> 0.33 ms, throughput 881 -> ~1,580 jobs/s. Planning each
call costs the simple statements a little (the submit INSERT 0.51 -> 0.9 ms per call of ~10).
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
