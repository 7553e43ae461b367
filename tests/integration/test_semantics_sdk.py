"""The SDK's side of the semantics: execution timeouts, heartbeat lists, claim tokens.

A gateway process and no scheduler: whatever is enforced here is enforced by the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.platform.store.rows import JobRow
from dispatchd.sdk import Task, Worker
from tests.support.gateway import PREFIX, Gateway, eventually, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Workers = Callable[..., Worker]


@pytest.fixture
def gateway(database_url: str, redis_url: str, spawn_service: Callable[..., ServiceProcess]) -> Gateway:
    return start_gateway(spawn_service, database_url, redis_url, DISPATCHD_LEASE_SECONDS="1")


@pytest_asyncio.fixture
async def workers(gateway: Gateway) -> AsyncIterator[Workers]:
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(handlers: dict[str, Callable[[Task], object]], **options: object) -> Worker:
        options.setdefault("heartbeat_seconds", 0.2)
        worker = Worker(gateway.target, **options)  # type: ignore[arg-type]
        for job_type, handler in handlers.items():
            worker.register(job_type, handler)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in running:
        worker.request_stop(grace=1.0)
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def submit(
    pool: asyncpg.Pool, client: redis.asyncio.Redis, job_type: str, *, timeout_ms: int | None = None
) -> uuid.UUID:
    new = jobs.NewJob(
        job_type=job_type,
        payload=b"",
        priority=0,
        idempotency_key=None,
        metadata={},
        retry=RetryPolicy(1, 0, 1),
        retry_policy_set=True,
        execution_timeout_ms=timeout_ms,
    )
    submitted = await jobs.submit(pool, new)
    assert submitted.queued is not None
    await ReadyQueues(client, PREFIX).push([submitted.queued])
    return submitted.job.job_id


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

    worker = workers({"slow": slow}, worker_id="sdk-timeout")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = await submit(db_pool, redis_client, "slow", timeout_ms=400)
    job = await finished(db_pool, job_id)
    assert (job.status, job.error_message) == (JobStatus.FAILED, "execution timed out after 0.4s")
    assert seen == [(0.4, True)]
    row = await db_pool.fetchrow(
        "SELECT status, finished_at - started_at AS ran FROM executions WHERE job_id = $1", job_id
    )
    assert row is not None and ExecutionStatus(row["status"]) is ExecutionStatus.DEAD_LETTERED
    print(f"\nSDK-side timeout: attempt ran {row['ran'].total_seconds() * 1000:.0f} ms (timeout 400 ms)")
    assert 0.35 <= row["ran"].total_seconds() < 0.7
    assert worker.inflight == 0


async def test_a_handler_that_swallows_the_timeout_still_fails_the_attempt(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async def stubborn(task: Task) -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "finished regardless"

    worker = workers({"stubborn": stubborn}, worker_id="sdk-stubborn")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = await submit(db_pool, redis_client, "stubborn", timeout_ms=300)
    job = await finished(db_pool, job_id)
    assert (job.status, job.error_message, job.result) == (JobStatus.FAILED, "execution timed out after 0.3s", None)


async def test_jobs_without_a_timeout_run_as_long_as_they_need(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async def patient(task: Task) -> str:
        assert task.execution_timeout is None
        await asyncio.sleep(1.5)  # longer than the 1 s lease: the listed heartbeats keep it
        return "done"

    worker = workers({"patient": patient}, worker_id="sdk-patient")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = await submit(db_pool, redis_client, "patient")
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
