"""The scheduler as separate processes against real Postgres and Redis.

Leader election between replicas (takeover after a crash, handover on shutdown) and
every repair of the reconcile loop: re-queueing, expired leases, silent workers,
orphaned executions, and timely delayed retries via the scheduler channel.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.platform.job_events import Kind
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus, WorkerStatus
from dispatchd.platform.store import executions, jobs, repairs, workers
from dispatchd.platform.store.rows import QueuedRef
from tests.support.factories import StartScheduler
from tests.support.leadership import KEYS, leader_token, wait_leading
from tests.support.polling import eventually, wait_until
from tests.support.submissions import first_attempt, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# Short, so a test of a repair waits little; the repair still must not come before it.
GRACE = 0.5

# --------------------------------------------------------------------------- helpers


def log_events(process: ServiceProcess) -> list[dict[str, object]]:
    entries = []
    for line in Path(process.log_path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


def token_of(process: ServiceProcess) -> str:
    def tokens() -> list[str]:
        return [str(e["token"]) for e in log_events(process) if e.get("msg") == "scheduler joins the leader election"]

    # Logged as the campaign starts, about when health turns SERVING, and written by the log thread.
    wait_until(lambda: bool(tokens()), 5, f"{process.name} logs its lease token")
    return tokens()[0]


def elections(process: ServiceProcess) -> int:
    return sum(1 for e in log_events(process) if e.get("event") == "leader_elected")


async def execution_rows(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM executions WHERE job_id = $1 ORDER BY attempt", job_id))


async def job_of(pool: asyncpg.Pool, ref: QueuedRef) -> uuid.UUID:
    job_id: uuid.UUID = await pool.fetchval("SELECT job_id FROM executions WHERE execution_id = $1", ref.execution_id)
    return job_id


# --------------------------------------------------------------------------- leadership


async def test_two_replicas_one_leads_and_the_other_takes_over_after_a_crash(
    start_scheduler: StartScheduler, redis_client: redis.asyncio.Redis
) -> None:
    replicas = [start_scheduler("scheduler-a"), start_scheduler("scheduler-b")]
    tokens = {token_of(p): p for p in replicas}

    async def someone_leads() -> bool:
        return await leader_token(redis_client) in tokens

    await eventually(someone_leads, 5, "a replica holds the lease")
    holder = await leader_token(redis_client)
    await asyncio.sleep(1.0)  # several renew/acquire rounds later: still the same single leader
    assert await leader_token(redis_client) == holder
    assert holder is not None
    leader = tokens[holder]
    standby = next(p for p in replicas if p is not leader)
    assert (elections(leader), elections(standby)) == (1, 0)

    leader.kill()
    killed_at = time.monotonic()

    async def standby_leads() -> bool:
        return await leader_token(redis_client) == token_of(standby)

    await eventually(standby_leads, 5, "the standby takes over")
    takeover = time.monotonic() - killed_at
    print(f"\ntakeover after SIGKILL of the leader: {takeover * 1000:.0f} ms (lease ttl 2 s)")
    assert takeover < 2.5
    await eventually(lambda: _true(elections(standby) == 1), 2, "the standby logs its election")


async def _true(value: bool) -> bool:
    return value


async def test_graceful_shutdown_hands_leadership_over_at_once(
    start_scheduler: StartScheduler, redis_client: redis.asyncio.Redis
) -> None:
    a = start_scheduler("scheduler-a")
    await wait_leading(redis_client, token_of(a))
    b = start_scheduler("scheduler-b")
    stopped_at = time.monotonic()
    assert a.terminate() == 0
    await wait_leading(redis_client, token_of(b))
    handover = time.monotonic() - stopped_at
    print(f"\nhandover after SIGTERM of the leader: {handover * 1000:.0f} ms")
    assert handover < 1.5
    assert any(e.get("event") == "leader_released" for e in log_events(a))


# --------------------------------------------------------------------------- re-queueing


async def test_queued_execution_missing_from_redis_is_requeued(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler(reconcile_grace_seconds=str(GRACE))
    await wait_leading(redis_client, token_of(scheduler))
    queues = ReadyQueues(redis_client, KEYS.prefix)
    ref = first_attempt(await submit(db_pool))  # in Postgres only, as if the control plane died before pushing
    # Seen missing by a pass within a safety-net interval (1 s), repaired a grace later.
    took = await eventually(lambda: queues.contains(ref), GRACE + 1.5, "the execution is on its ready queue")
    print(f"\nre-queued after {took * 1000:.0f} ms")
    assert took >= GRACE, "re-queued before it had been missing for the grace period"
    assert ref.job_type in await queues.known_job_types()


async def test_everything_due_is_back_after_redis_loses_its_data(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler(reconcile_grace_seconds=str(GRACE))
    await wait_leading(redis_client, token_of(scheduler))
    queues = ReadyQueues(redis_client, KEYS.prefix)
    refs = [first_attempt(await submit(db_pool, job_type=f"type.{i % 3}")) for i in range(30)]

    async def all_queued() -> bool:
        return all([await queues.contains(ref) for ref in refs])

    await eventually(all_queued, 2, "all executions queued")
    await redis_client.flushall()
    took = await eventually(all_queued, 4 + GRACE, "all executions queued again after FLUSHALL")
    print(f"\nall 30 executions back {took * 1000:.0f} ms after FLUSHALL (includes re-election)")
    await wait_leading(redis_client, token_of(scheduler))


async def test_delayed_retry_is_queued_on_time_after_a_wake_up(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    # Without the wake-up the next pass would only come after 30 s.
    scheduler = start_scheduler(reconcile_seconds="30")
    await wait_leading(redis_client, token_of(scheduler))
    await asyncio.sleep(0.2)  # let the pass that follows the election finish
    queues = ReadyQueues(redis_client, KEYS.prefix)
    async with db_pool.acquire() as conn, conn.transaction():
        ref = first_attempt(await submit(conn))
        due: float = await conn.fetchval(
            "UPDATE executions SET available_at = clock_timestamp() + interval '300 milliseconds'"
            " WHERE execution_id = $1 RETURNING EXTRACT(EPOCH FROM available_at)::float8",
            ref.execution_id,
        )
    # What the gateway does when it queues a retry with backoff.
    await redis_client.publish(KEYS.scheduler_channel, f"{due:.3f}")
    # Within 2 s of being due: far sooner than the 30 s pass, so the wake-up's timer did it.
    while not await queues.contains(ref):
        assert time.time() < due + 2, "the delayed execution was never queued"
        await asyncio.sleep(0.002)
    lag = time.time() - due
    print(f"\ndelayed execution queued {lag * 1000:.0f} ms after it became due")
    assert lag >= 0, "queued before it was due"


# --------------------------------------------------------------------------- lost work


async def test_expired_lease_fails_the_attempt_and_queues_a_retry(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler()
    await wait_leading(redis_client, token_of(scheduler))
    ref = first_attempt(await submit(db_pool, max_attempts=3, initial_backoff_ms=100))
    claims = await executions.claim(
        db_pool, [ref.execution_id], worker_id="w1", session_id=uuid.uuid4(), lease_seconds=0.2
    )
    assert len(claims) == 1
    job_id = claims[0].job_id
    queues = ReadyQueues(redis_client, KEYS.prefix)

    async def retried() -> bool:
        rows = await execution_rows(db_pool, job_id)
        return len(rows) == 2 and await queues.contains(
            QueuedRef(rows[1]["execution_id"], ref.job_type, ref.priority, rows[1]["available_at"])
        )

    await eventually(retried, 3, "attempt 2 is queued and on its ready queue")
    first, second = await execution_rows(db_pool, job_id)
    assert ExecutionStatus(first["status"]) is ExecutionStatus.FAILED
    assert first["error_message"] == "lease expired"
    assert (second["attempt"], ExecutionStatus(second["status"])) == (2, ExecutionStatus.QUEUED)
    job = await jobs.get(db_pool, job_id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 2)


async def test_expired_lease_of_the_last_attempt_dead_letters_the_job(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler()
    await wait_leading(redis_client, token_of(scheduler))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(KEYS.job_channel)
    try:
        ref = first_attempt(await submit(db_pool, max_attempts=1))
        claims = await executions.claim(
            db_pool, [ref.execution_id], worker_id="w1", session_id=uuid.uuid4(), lease_seconds=0.1
        )
        job_id = claims[0].job_id
        deadline = time.monotonic() + 3
        event = None
        while event is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                event = json.loads(message["data"])
        assert event is not None
        # What WaitJob reads, and (for watchers) the type and what happened: dead-lettered.
        assert {k: event.pop(k) for k in ("job_id", "status", "job_type", "kind")} == {
            "job_id": str(job_id),
            "status": int(JobStatus.FAILED),
            "job_type": ref.job_type,
            "kind": int(Kind.DEAD_LETTERED),
        }
        assert set(event) == {"at"}
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    (only,) = await execution_rows(db_pool, job_id)
    assert ExecutionStatus(only["status"]) is ExecutionStatus.DEAD_LETTERED
    job = await jobs.get(db_pool, job_id)
    assert job.status is JobStatus.FAILED and job.error_message == "lease expired"


async def test_silent_worker_goes_offline_and_its_executions_are_released(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler(worker_offline_seconds="0.5")
    await wait_leading(redis_client, token_of(scheduler))
    session = uuid.uuid4()
    await workers.register(
        db_pool,
        worker_id="quiet",
        session_id=session,
        gateway_id="gw",
        capabilities=["test.*"],
        max_concurrency=2,
        labels={},
    )
    ref = first_attempt(await submit(db_pool))
    # A long lease: only the missing heartbeats can release this execution.
    claims = await executions.claim(
        db_pool, [ref.execution_id], worker_id="quiet", session_id=session, lease_seconds=60
    )
    job_id = claims[0].job_id
    queues = ReadyQueues(redis_client, KEYS.prefix)

    async def released() -> bool:
        rows = await execution_rows(db_pool, job_id)
        return len(rows) == 2 and await queues.contains(
            QueuedRef(rows[1]["execution_id"], ref.job_type, ref.priority, rows[1]["available_at"])
        )

    took = await eventually(released, 3, "the silent worker's execution is released and re-queued")
    print(f"\nreleased {took * 1000:.0f} ms after claim (offline after 500 ms of silence)")
    assert await db_pool.fetchval("SELECT status FROM workers WHERE worker_id = 'quiet'") == WorkerStatus.OFFLINE
    first, second = await execution_rows(db_pool, job_id)
    assert (ExecutionStatus(first["status"]), first["error_message"]) == (
        ExecutionStatus.FAILED,
        "worker heartbeat lost",
    )
    assert ExecutionStatus(second["status"]) is ExecutionStatus.QUEUED


async def test_active_execution_of_a_terminal_job_is_cancelled(
    start_scheduler: StartScheduler, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    scheduler = start_scheduler()
    await wait_leading(redis_client, token_of(scheduler))
    ref = first_attempt(await submit(db_pool))
    job_id = await job_of(db_pool, ref)
    await db_pool.execute("UPDATE jobs SET status = $2 WHERE job_id = $1", job_id, int(JobStatus.CANCELED))

    async def cancelled() -> bool:
        (row,) = await execution_rows(db_pool, job_id)
        return ExecutionStatus(row["status"]) is ExecutionStatus.CANCELED

    await eventually(cancelled, 2, "the orphaned execution is cancelled")


async def test_requeue_pages_through_a_backlog_larger_than_a_page(db_pool: asyncpg.Pool) -> None:
    # Keyset paging of due_queued: every row exactly once, oldest first.
    for _ in range(7):
        await submit(db_pool)
    seen: list[QueuedRef] = []
    after = None
    while True:
        page = await repairs.due_queued(db_pool, 3, after=after)
        seen += page
        if len(page) < 3:
            break
        after = page[-1]
    assert len({r.execution_id for r in seen}) == len(seen) == 7
    assert [r.available_at for r in seen] == sorted(r.available_at for r in seen)
