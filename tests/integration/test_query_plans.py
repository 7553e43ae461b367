"""The hot statements are planned for their own arguments, and the claim's plan probes primary keys.

A queue table's status distribution moves faster than ANALYZE. Postgres' default turns a
prepared statement into a generic plan after five executions; at saturation (2,000 queued,
statistics from before the backlog) the generic claim walked every queued execution and
active job through the status indexes: 4.7 ms per call of ~10 jobs instead of ~1 ms
(pg_stat_statements; dispatchd.platform.db). This small database does not reproduce that
generic plan, so the test holds the setting that prevents it, then checks that the claim,
run seven times through a pool connection with statistics taken before 600 more jobs were
queued, finds its rows by primary key.
"""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store import executions
from dispatchd.platform.store.submits import NewJob, submit_all

pytestmark = pytest.mark.integration

STATUS_INDEXES = {"jobs_status_created_idx", "executions_queued_idx"}


def indexes_in(plan: object) -> set[str]:
    if isinstance(plan, dict):
        found = {plan["Index Name"]} if "Index Name" in plan else set()
        return found.union(*(indexes_in(child) for child in plan.values()))
    if isinstance(plan, list):
        return set().union(*(indexes_in(child) for child in plan))
    return set()


async def test_the_claim_probes_primary_keys_with_stale_statistics(db_pool: asyncpg.Pool) -> None:
    new = NewJob("plans.claim", b"x", 0, None, {}, RetryPolicy(), False)
    async with db_pool.acquire() as conn:
        await submit_all(conn, [new] * 400)
        await conn.execute("UPDATE jobs SET status = 4; UPDATE executions SET status = 4")
        await submit_all(conn, [new] * 100)
        await conn.execute("ANALYZE jobs, executions")  # 100 of 500 queued
        await submit_all(conn, [new] * 600)  # queued after the statistics were taken
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        ids = [r[0] for r in await conn.fetch("SELECT execution_id FROM executions WHERE status = 1 LIMIT 70")]
        await conn.execute(f"PREPARE claim (uuid[], text, uuid, float8) AS {executions._CLAIM}")
        try:
            for call in range(7):
                batch = "{" + ",".join(str(i) for i in ids[call * 10 : (call + 1) * 10]) + "}"
                explained = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim('{batch}', 'w', '{uuid.uuid4()}', 30)"
                )
                plan = json.loads(explained)
                assert plan[0]["Plan"]["Actual Rows"] == 10  # claimed all ten
                assert not indexes_in(plan) & STATUS_INDEXES, f"call {call + 1} walked a status index"
        finally:
            await conn.execute("DEALLOCATE claim")
