"""Migrations: every revision goes down and up again to the same schema, and keeps the data it can.

The schema is compared as Postgres reports it (columns, indexes with their predicates,
constraints), so a downgrade that forgets an index or an upgrade that differs from the
one the template was built with fails here.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from dispatchd.platform import migrate
from tests.support.submissions import submit

pytestmark = pytest.mark.integration

_SCHEMA = (
    "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable"
    " || ' ' || coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace",
)


async def _schema(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {row[0] for query in _SCHEMA for row in await conn.fetch(query)}
    finally:
        await conn.close()


async def _indexes(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' AND indexname LIKE '%key_key'")
    return {r[0] for r in rows}


async def test_every_migration_goes_down_and_up_to_the_same_schema(database_url: str) -> None:
    head = await _schema(database_url)
    assert any("(submitted_by, idempotency_key) NULLS NOT DISTINCT" in line for line in head)
    # Alembic's env.py runs its own event loop: keep it off this one.
    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    assert await _schema(database_url) == {
        line for line in head if line.startswith(("alembic_version", "CREATE UNIQUE INDEX alembic_version"))
    }
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await _schema(database_url) == head


async def test_downgrading_the_per_submitter_keys_keeps_every_job(database_url: str, db_pool: asyncpg.Pool) -> None:
    key = f"k-{uuid.uuid4().hex}"
    first = (await submit(db_pool, key=key, submitted_by="bob")).job
    second = (await submit(db_pool, key=key, submitted_by="alice")).job
    assert first.job_id != second.job_id
    assert await _indexes(db_pool) == {"jobs_submitter_idempotency_key_key"}

    await asyncio.to_thread(migrate.downgrade, database_url, "0003")
    assert await _indexes(db_pool) == {"jobs_idempotency_key_key"}
    # The global index holds one job per key: the oldest keeps it, the other keeps running unkeyed.
    rows = await db_pool.fetch("SELECT job_id, idempotency_key FROM jobs ORDER BY created_at")
    assert [(r["job_id"], r["idempotency_key"]) for r in rows] == [(first.job_id, key), (second.job_id, None)]

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await _indexes(db_pool) == {"jobs_submitter_idempotency_key_key"}


async def test_the_trace_context_is_stored_with_the_job_and_goes_with_its_migration(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    traced = (await submit(db_pool, trace_context=carrier)).job
    untraced = (await submit(db_pool)).job
    stored = "SELECT job_id, trace_context FROM jobs ORDER BY created_at"
    assert [tuple(r) for r in await db_pool.fetch(stored)] == [(traced.job_id, carrier), (untraced.job_id, None)]

    await asyncio.to_thread(migrate.downgrade, database_url, "0004")
    assert await db_pool.fetchval("SELECT count(*) FROM jobs") == 2
    columns = await db_pool.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")
    assert "trace_context" not in {r[0] for r in columns}

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert [tuple(r) for r in await db_pool.fetch(stored)] == [(traced.job_id, None), (untraced.job_id, None)]
