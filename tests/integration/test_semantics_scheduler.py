"""The scheduler's repairs under fencing, and what they tell the workers.

Two reconcilers with different epochs run passes at once (the stale one changes nothing);
the epoch stays monotonic when Redis loses its counter; and, with the gateway and the
scheduler as real processes, an execution whose lease expired or that runs past its
timeout is failed server-side and its worker is told to stop, even one that ignores it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.config import Settings
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import executions, fence, jobs, workers
from dispatchd.platform.store.fence import Fenced
from dispatchd.scheduler.reconciler import Reconciler
from dispatchd.v1 import worker_service_pb2 as pb
from tests.support.factories import GatewayWith, StartScheduler, Streams
from tests.support.leadership import KEYS, wait_leading
from tests.support.polling import eventually
from tests.support.submissions import PREFIX, first_attempt, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

async def expired_claims(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(count):
        submitted = await submit(pool)
        assert submitted.queued is not None
        await executions.claim(
            pool, [submitted.queued.execution_id], worker_id="w", session_id=uuid.uuid4(), lease_seconds=0
        )
        ids.append(submitted.job.job_id)
    await asyncio.sleep(0.01)
    return ids


async def history(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[ExecutionStatus]:
    rows = await pool.fetch("SELECT status FROM executions WHERE job_id = $1 ORDER BY attempt", job_id)
    return [ExecutionStatus(r["status"]) for r in rows]


async def redis_epoch(client: redis.asyncio.Redis) -> int:
    value = await client.get(f"{KEYS.leader}:epoch")
    assert value is not None
    return int(value)


# --------------------------------------------------------------------------- two leaders at once


async def test_two_reconcilers_at_once_the_stale_one_changes_nothing(
    db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    settings = Settings(worker_offline_seconds=0.0)
    stale = Reconciler(settings, db_pool, ReadyQueues(redis_client, PREFIX))
    newer = Reconciler(settings, db_pool, ReadyQueues(redis_client, PREFIX))
    stale.epoch = await fence.open_term(db_pool, 1)
    newer.epoch = await fence.open_term(db_pool, 2)
    # Work for every loop: expired leases, a silent worker's claim, an orphan of a cancelled job.
    expired = await expired_claims(db_pool, 10)
    session = uuid.uuid4()
    await workers.register(
        db_pool, worker_id="quiet", session_id=session, gateway_id="g", capabilities=["work"], max_concurrency=1,
        labels={},
    )
    silent = await submit(db_pool)
    assert silent.queued is not None
    await executions.claim(
        db_pool, [silent.queued.execution_id], worker_id="quiet", session_id=session, lease_seconds=60
    )
    orphan = await submit(db_pool)
    await db_pool.execute("UPDATE jobs SET status = 6 WHERE job_id = $1", orphan.job.job_id)
    snapshot = await db_pool.fetch("SELECT * FROM executions ORDER BY execution_id")
    worker_rows = await db_pool.fetch("SELECT * FROM workers")

    with pytest.raises(Fenced):
        await stale.run_pass()
    assert await db_pool.fetch("SELECT * FROM executions ORDER BY execution_id") == snapshot
    assert await db_pool.fetch("SELECT * FROM workers") == worker_rows

    # Both at once, several rounds: the stale one is refused every time, nothing is repaired twice.
    for _ in range(3):
        outcomes = await asyncio.gather(stale.run_pass(), newer.run_pass(), return_exceptions=True)
        assert isinstance(outcomes[0], Fenced), outcomes[0]
        assert not isinstance(outcomes[1], BaseException), outcomes[1]
    for job_id in expired:
        assert await history(db_pool, job_id) == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]
    assert await history(db_pool, silent.job.job_id) == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]
    assert await history(db_pool, orphan.job.job_id) == [ExecutionStatus.CANCELED]
    # Idempotent: another pass of the rightful leader finds nothing left to repair.
    report = await newer.run_pass()
    assert report.repairs() == {}


async def test_epoch_stays_monotonic_when_redis_loses_its_counter(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    # Earlier terms reached epoch 41 (recorded in Postgres); Redis starts from nothing.
    await fence.open_term(db_pool, 41)
    # A short grace: the repair at the end comes within its bound (a pass, then the grace).
    start_scheduler(reconcile_grace_seconds="0.5")

    async def recorded(at_least: int) -> bool:
        return await fence.current(db_pool) >= at_least

    await eventually(lambda: recorded(42), 5)
    assert await redis_epoch(redis_client) == 42
    first = await fence.current(db_pool)
    await redis_client.flushall()  # lease and counter gone: the next term starts from INCR = 1
    await eventually(lambda: recorded(first + 1), 5)
    assert await redis_epoch(redis_client) == await fence.current(db_pool)
    # The leader keeps repairing under its new epoch.
    ref = first_attempt(await submit(db_pool))
    queues = ReadyQueues(redis_client, PREFIX)
    await eventually(lambda: queues.contains(ref), 3)


# --------------------------------------------------------------------------- telling workers to stop


@pytest.fixture
def gateway_and_scheduler(gateway_with: GatewayWith, start_scheduler: StartScheduler) -> Callable[..., str]:
    """`gateway_and_scheduler(**settings)`: both running with these settings; the gateway's target."""

    def start(**settings: str) -> str:
        scheduler = start_scheduler(wait=False, **settings)
        env = {f"DISPATCHD_{key.upper()}": value for key, value in settings.items()}
        target = gateway_with(**env).target
        scheduler.wait_healthy()
        return target

    return start


async def test_expired_lease_release_tells_the_worker_to_stop(
    streams: Streams,
    gateway_and_scheduler: Callable[..., str], db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    target = gateway_and_scheduler(lease_seconds="0.5")
    await wait_leading(redis_client)
    stream = streams(target)
    await stream.register("frozen", ["work"], max_concurrency=1)
    submitted = await submit(db_pool, redis_client)
    assignment = await stream.expect("assignment")
    # No heartbeats: the worker is stuck, but its stream is open.
    cancel = await stream.expect("cancel", timeout=5)
    assert (cancel.execution_id, cancel.reason) == (assignment.execution_id, "lease expired")
    assert await history(db_pool, submitted.job.job_id) == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]


async def test_timeout_is_enforced_server_side_on_a_worker_that_ignores_cancel(
    streams: Streams,
    gateway_and_scheduler: Callable[..., str], db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    # No reconcile pass within the test: only the gateway's wake-up at the due timeout can
    # make the scheduler enforce it in time.
    target = gateway_and_scheduler(reconcile_seconds="30")
    await wait_leading(redis_client)
    stream = streams(target)
    await stream.register("stubborn", ["work"], max_concurrency=1)
    submitted = await submit(db_pool, redis_client, max_attempts=2, timeout_ms=500)
    assignment = await stream.expect("assignment")
    assert assignment.execution_timeout.ToMilliseconds() == 500
    await stream.send(started=pb.TaskStarted(execution_id=assignment.execution_id))
    await stream.expect("ack", ack_kind="started")
    cancel = await stream.expect("cancel", timeout=5)
    assert (cancel.execution_id, cancel.reason) == (assignment.execution_id, "execution timed out")
    row = await db_pool.fetchrow(
        "SELECT status, error_message, finished_at - started_at AS ran FROM executions WHERE execution_id = $1",
        uuid.UUID(assignment.execution_id),
    )
    assert row is not None and ExecutionStatus(row["status"]) is ExecutionStatus.FAILED
    assert row["error_message"] == "execution timed out"
    print(f"\nserver-side timeout: the attempt ran {row['ran'].total_seconds() * 1000:.0f} ms (timeout 500 ms)")
    assert row["ran"] >= dt.timedelta(milliseconds=500), "failed before its timeout"
    # Ignoring the cancel, it reports success much later: stale, the attempt stays failed.
    await asyncio.sleep(0.2)
    await stream.send(
        result=pb.TaskResult(execution_id=assignment.execution_id, success=True, claim_token=assignment.claim_token)
    )
    assert (await stream.expect("ack", ack_kind="result")).status == pb.ACK_STATUS_STALE
    # The retry (a failed attempt counts) comes back, times out too, and the job dead-letters.
    retry = await stream.expect("assignment")
    assert retry.attempt == 2
    await stream.expect("cancel", timeout=5)
    job = await jobs.get(db_pool, submitted.job.job_id)

    async def failed() -> bool:
        return (await jobs.get(db_pool, submitted.job.job_id)).status is JobStatus.FAILED

    await eventually(failed, 3)
    job = await jobs.get(db_pool, submitted.job.job_id)
    assert (job.error_message, job.attempts) == ("execution timed out", 2)
