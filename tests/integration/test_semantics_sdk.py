"""The SDK's side of the semantics: execution timeouts, heartbeat lists, claim tokens.

A gateway process and no scheduler: whatever is enforced here is enforced by the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.platform.store.rows import JobRow
from dispatchd.sdk import Task
from tests.support.factories import Workers
from tests.support.polling import eventually
from tests.support.submissions import submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"DISPATCHD_LEASE_SECONDS": "1"}


async def finished(pool: asyncpg.Pool, job_id: uuid.UUID, timeout: float = 10) -> JobRow:
    async def terminal() -> bool:
        return jobs.is_terminal((await jobs.get(pool, job_id)).status)

    await eventually(terminal, timeout)
    return await jobs.get(pool, job_id)


async def test_sdk_cancels_a_handler_at_its_execution_timeout(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    seen: list[tuple[float | None, bool]] = []

    async def slow(task: Task) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append((task.execution_timeout, task.cancelled.is_set()))
            raise

    worker = workers(lambda w: w.register("slow", slow), heartbeat_seconds=0.2, worker_id="sdk-timeout")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "slow", max_attempts=1, timeout_ms=400)).job.job_id
    job = await finished(db_pool, job_id)
    assert (job.status, job.error_message) == (JobStatus.FAILED, "execution timed out after 0.4s")
    assert seen == [(0.4, True)]
    row = await db_pool.fetchrow(
        "SELECT status, finished_at - started_at AS ran FROM executions WHERE job_id = $1", job_id
    )
    assert row is not None and ExecutionStatus(row["status"]) is ExecutionStatus.DEAD_LETTERED
    print(f"\nSDK-side timeout: attempt ran {row['ran'].total_seconds() * 1000:.0f} ms (timeout 400 ms)")
    # Not before its timeout (the SDK starts the clock a little before the gateway records the
    # start), and ended by it: the handler alone would sleep 30 s. The latency is perf's business.
    assert 0.35 <= row["ran"].total_seconds() < 5
    assert worker.inflight == 0


async def test_a_handler_that_swallows_the_timeout_still_fails_the_attempt(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async def stubborn(task: Task) -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "finished regardless"

    worker = workers(lambda w: w.register("stubborn", stubborn), heartbeat_seconds=0.2, worker_id="sdk-stubborn")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "stubborn", max_attempts=1, timeout_ms=300)).job.job_id
    job = await finished(db_pool, job_id)
    assert (job.status, job.error_message, job.result) == (JobStatus.FAILED, "execution timed out after 0.3s", None)


async def test_jobs_without_a_timeout_run_as_long_as_they_need(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async def patient(task: Task) -> str:
        assert task.execution_timeout is None
        await asyncio.sleep(1.5)  # longer than the 1 s lease: the listed heartbeats keep it
        return "done"

    worker = workers(lambda w: w.register("patient", patient), heartbeat_seconds=0.2, worker_id="sdk-patient")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "patient", max_attempts=1)).job.job_id
    leases = []

    async def done() -> bool:
        lease = await db_pool.fetchval("SELECT lease_expires_at FROM executions WHERE job_id = $1", job_id)
        if lease is not None:
            leases.append(lease)
        return jobs.is_terminal((await jobs.get(db_pool, job_id)).status)

    await eventually(done, 10, interval=0.1)
    job = await jobs.get(db_pool, job_id)
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, b"done")
    assert len(set(leases)) >= 3, "heartbeats listing the running execution renewed its lease"
    # The result carried the claim token: nothing else could have been accepted as the claim.
    assert await db_pool.fetchval("SELECT claim_token IS NOT NULL FROM executions WHERE job_id = $1", job_id)
