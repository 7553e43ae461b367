"""The hot statements find the rows they name by id through primary keys, however stale the statistics.

A queue table's status distribution moves faster than ANALYZE. Here the statistics are taken
while every job has succeeded, then 3,000 jobs are queued: the status indexes look empty. A
plain status guard then let the claim walk every queued execution and active job through
them (9.9 ms for 10 jobs instead of 0.37); `guards.checked` keeps the guard out of the
planner's reach. Each statement runs seven times through a pool connection (past the five
after which Postgres may switch a prepared statement to a generic plan), with the pool's own
plan mode and with Postgres' default, and no plan may name a status index.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store import executions, settlements
from dispatchd.platform.store.submits import NewJob, submit_all

pytestmark = pytest.mark.integration

STATUS_INDEXES = {
    "jobs_status_created_idx",
    "executions_queued_idx",
    "executions_owned_deadline_idx",
    "executions_owned_lease_idx",
    "executions_owned_session_idx",
}
CALLS = 7
BATCH = 10


def indexes_in(plan: object) -> set[str]:
    if isinstance(plan, dict):
        found = {plan["Index Name"]} if "Index Name" in plan else set()
        return found.union(*(indexes_in(child) for child in plan.values()))
    if isinstance(plan, list):
        return set().union(*(indexes_in(child) for child in plan))
    return set()


def uuids(values: list[uuid.UUID]) -> str:
    return "'{" + ",".join(map(str, values)) + "}'::uuid[]"


@pytest_asyncio.fixture
async def stale(db_pool: asyncpg.Pool) -> AsyncIterator[tuple[asyncpg.Connection, list[uuid.UUID]]]:
    """A pool connection over 3,000 queued jobs the statistics know nothing of; 70 of their execution ids."""
    new = NewJob("plans.stale", b"x", 0, None, {}, RetryPolicy(), False)
    async with db_pool.acquire() as conn:
        await submit_all(conn, [new] * 1000)
        await conn.execute("UPDATE jobs SET status = 4; UPDATE executions SET status = 4; ANALYZE jobs, executions")
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"  # the pool's (dispatchd.platform.db)
        for _ in range(3):
            await submit_all(conn, [new] * 1000)
        ids = [r[0] for r in await conn.fetch("SELECT execution_id FROM executions WHERE status = 1 LIMIT 70")]
        yield conn, ids


@pytest.mark.parametrize("mode", ["pool", "auto"])
async def test_the_claim_probes_primary_keys(stale: tuple[asyncpg.Connection, list[uuid.UUID]], mode: str) -> None:
    conn, ids = stale
    if mode == "auto":
        await conn.execute("SET plan_cache_mode = auto")  # Postgres' default (a test connection: reset after)
    await conn.execute(f"PREPARE claim (uuid[], text, uuid, float8) AS {executions._CLAIM}")
    try:
        for call in range(CALLS):
            batch = ids[call * BATCH : (call + 1) * BATCH]
            claiming = conn.transaction()  # rolled back: the claim runs inside EXPLAIN ANALYZE
            await claiming.start()
            try:
                explained = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim({uuids(batch)}, 'w', '{uuid.uuid4()}', 30)"
                )
            finally:
                await claiming.rollback()
            plan = json.loads(explained)
            assert plan[0]["Plan"]["Actual Rows"] == BATCH  # claimed all ten
            assert not indexes_in(plan) & STATUS_INDEXES, f"claim {call + 1} walked a status index"
    finally:
        await conn.execute("DEALLOCATE claim; RESET plan_cache_mode")


@pytest.mark.parametrize("mode", ["pool", "auto"])
@pytest.mark.parametrize(
    ("name", "statement", "types"),
    [
        ("start", settlements._START, "uuid[], uuid[]"),
        ("succeed", settlements._LOCK_AND_SUCCEED, "uuid[], text[], uuid[], uuid[], bytea[]"),
    ],
)
async def test_starts_and_successes_probe_primary_keys(
    stale: tuple[asyncpg.Connection, list[uuid.UUID]], mode: str, name: str, statement: str, types: str
) -> None:
    conn, ids = stale
    if mode == "auto":
        await conn.execute("SET plan_cache_mode = auto")
    await conn.execute(f"PREPARE {name} ({types}) AS {statement}")
    try:
        for call in range(CALLS):
            batch = ids[call * BATCH : (call + 1) * BATCH]
            sessions = [uuid.uuid4() for _ in batch]
            if name == "start":
                arguments = f"{uuids(batch)}, {uuids(sessions)}"
            else:
                n = len(batch)
                arguments = (
                    f"{uuids(batch)}, array_fill('w'::text, ARRAY[{n}]), {uuids(sessions)}, "
                    f"array_fill(NULL::uuid, ARRAY[{n}]), array_fill('\\x00'::bytea, ARRAY[{n}])"
                )
            plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({arguments})"))
            assert not indexes_in(plan) & STATUS_INDEXES, f"{name} {call + 1} walked a status index"
    finally:
        await conn.execute(f"DEALLOCATE {name}; RESET plan_cache_mode")
