"""Worker SDK against a real gateway process (Postgres and Redis behind it)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.sdk import HandlerFailed, RegistrationRejected, Task, Worker
from dispatchd.sdk import handlers as builtin_handlers
from tests.support.factories import Workers
from tests.support.gateway import Gateway
from tests.support.polling import eventually
from tests.support.submissions import PREFIX, submit

pytestmark = pytest.mark.integration

async def _status(pool: asyncpg.Pool, job_id: uuid.UUID, status: JobStatus, timeout: float = 10.0) -> None:
    async def reached() -> bool:
        return (await jobs.get(pool, job_id)).status is status

    await eventually(reached, timeout)


async def test_jobs_complete_through_the_sdk(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    seen: list[Task] = []

    async def upper(task: Task) -> dict[str, object]:
        seen.append(task)
        await task.log(f"handling {task.job_type}")
        return {"text": task.text().upper(), "type": task.job_type}

    worker = workers(register=lambda w: w.register("text", upper), worker_id="sdk-1", labels={"zone": "a"})
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_ids = [(await submit(db_pool, redis_client, "text.upper", f"job {i}".encode())).job.job_id for i in range(20)]
    for i, job_id in enumerate(job_ids):
        await _status(db_pool, job_id, JobStatus.SUCCEEDED)
        job = await jobs.get(db_pool, job_id)
        assert job.result == f'{{"text":"JOB {i}","type":"text.upper"}}'.encode()
    assert {t.job_type for t in seen} == {"text.upper"} and all(t.attempt == 1 for t in seen)
    logs = await db_pool.fetchval("SELECT count(*) FROM execution_logs WHERE message = 'handling text.upper'")
    assert logs == 20
    row = await db_pool.fetchrow("SELECT capabilities, labels, status FROM workers WHERE worker_id = 'sdk-1'")
    assert row is not None and row["capabilities"] == ["text"] and row["labels"] == {"zone": "a"}


async def test_failures_are_reported_and_retried(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async def failing_with_result(task: Task) -> None:
        raise HandlerFailed("exit code 7", result={"exit_code": 7})

    def register(worker: Worker) -> None:
        builtin_handlers.register_builtins(worker)
        worker.register("partial", failing_with_result)

    worker = workers(register=register)
    await asyncio.wait_for(worker.registered.wait(), 10)
    failing = (await submit(db_pool, redis_client, "builtin.fail", max_attempts=2)).job.job_id
    flaky = (await submit(db_pool, redis_client, "builtin.flaky", b'{"fail_attempts": 1}', max_attempts=3)).job.job_id
    partial = (await submit(db_pool, redis_client, "partial", max_attempts=1)).job.job_id
    await _status(db_pool, failing, JobStatus.FAILED)
    job = await jobs.get(db_pool, failing)
    assert job.error_message == "RuntimeError: builtin.fail always fails (attempt 2)" and job.attempts == 2
    await _status(db_pool, flaky, JobStatus.SUCCEEDED)
    assert (await jobs.get(db_pool, flaky)).result == b'{"attempt":2}'
    await _status(db_pool, partial, JobStatus.FAILED)
    row = await db_pool.fetchrow("SELECT status, error_message, result FROM executions WHERE job_id = $1", partial)
    assert row is not None
    assert (row["status"], row["error_message"], row["result"]) == (
        ExecutionStatus.DEAD_LETTERED,
        "exit code 7",
        b'{"exit_code":7}',
    )


async def test_sdk_never_runs_more_than_max_concurrency(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    active = 0
    peak = 0

    async def slow(task: Task) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    worker = workers(register=lambda w: w.register("slow", slow), max_concurrency=3)
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_ids = [(await submit(db_pool, redis_client, "slow")).job.job_id for _ in range(12)]
    for job_id in job_ids:
        await _status(db_pool, job_id, JobStatus.SUCCEEDED)
    assert peak == 3


async def test_cancel_reaches_a_running_handler(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def forever(task: Task) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled" if task.cancelled.is_set() else "cancelled without the event")
            raise

    worker = workers(register=lambda w: w.register("forever", forever), worker_id="sdk-c")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "forever")).job.job_id
    await asyncio.wait_for(started.wait(), 5)
    cancelled = await jobs.cancel(db_pool, job_id, "stop it")
    for execution_id, worker_id in cancelled.stopped:
        await ReadyQueues(redis_client, PREFIX).publish_cancel(str(execution_id), worker_id, "stop it")

    async def handler_cancelled() -> bool:
        return outcome == ["cancelled"] and worker.inflight == 0

    await eventually(handler_cancelled, 5)
    execution = await db_pool.fetchrow("SELECT status, error_message FROM executions WHERE job_id = $1", job_id)
    assert execution is not None and execution["status"] == ExecutionStatus.CANCELED
    # The worker keeps serving after the cancel.
    await asyncio.sleep(0)
    again = (await submit(db_pool, redis_client, "forever")).job.job_id
    started.clear()
    await asyncio.wait_for(started.wait(), 5)
    assert (await jobs.get(db_pool, again)).status in (JobStatus.DISPATCHING, JobStatus.RUNNING)


async def test_sdk_reconnects_after_the_gateway_restarts(
    gateway: Gateway, workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    worker = workers(register=builtin_handlers.register_builtins, worker_id="sdk-r")
    await asyncio.wait_for(worker.registered.wait(), 10)
    first = (await submit(db_pool, redis_client, "builtin.echo", b"before")).job.job_id
    await _status(db_pool, first, JobStatus.SUCCEEDED)
    gateway.process.kill()

    async def disconnected() -> bool:
        return not worker.registered.is_set()

    await eventually(disconnected, 10)
    await asyncio.to_thread(gateway.restart)
    await asyncio.wait_for(worker.registered.wait(), 20)
    assert worker.connections == 2
    second = (await submit(db_pool, redis_client, "builtin.echo", b"after")).job.job_id
    await _status(db_pool, second, JobStatus.SUCCEEDED)
    assert (await jobs.get(db_pool, second)).result == b"after"


@pytest.mark.parametrize("gateway_env", [{"DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3"}])  # the 1 s handler fits
async def test_drain_lets_running_work_finish_then_reconnects(
    gateway: Gateway, workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    worker = workers(register=builtin_handlers.register_builtins, worker_id="sdk-d")
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "builtin.sleep", b'{"seconds": 1.0}')).job.job_id
    await _status(db_pool, job_id, JobStatus.RUNNING, 5)
    os.kill(gateway.process.pid, signal.SIGTERM)
    await _status(db_pool, job_id, JobStatus.SUCCEEDED, 10)
    assert await asyncio.to_thread(gateway.process.wait, 10) == 0
    await asyncio.to_thread(gateway.restart)

    async def reconnected() -> bool:
        return worker.connections == 2 and worker.registered.is_set()

    await eventually(reconnected, 20)
    again = (await submit(db_pool, redis_client, "builtin.echo", b"x")).job.job_id
    await _status(db_pool, again, JobStatus.SUCCEEDED)


async def test_graceful_stop_finishes_running_work(
    gateway: Gateway, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    worker = Worker(gateway.target, worker_id="sdk-s", heartbeat_seconds=1.0)
    builtin_handlers.register_builtins(worker)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "builtin.sleep", b'{"seconds": 0.5}')).job.job_id
    await _status(db_pool, job_id, JobStatus.RUNNING, 5)
    await asyncio.wait_for(worker.stop(grace=5), 10)
    assert runner.done() and runner.exception() is None
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.SUCCEEDED

    async def offline() -> bool:
        return bool(await db_pool.fetchval("SELECT status = 4 FROM workers WHERE worker_id = 'sdk-s'"))

    await eventually(offline, 5)


async def test_stop_after_grace_releases_the_work(
    gateway: Gateway, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    worker = Worker(gateway.target, worker_id="sdk-g", heartbeat_seconds=1.0)
    builtin_handlers.register_builtins(worker)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "builtin.sleep", b'{"seconds": 30}')).job.job_id
    await _status(db_pool, job_id, JobStatus.RUNNING, 5)
    await asyncio.wait_for(worker.stop(grace=0.2), 10)
    await runner

    async def requeued() -> bool:
        return bool(await db_pool.fetchval("SELECT count(*) = 2 FROM executions WHERE job_id = $1", job_id))

    await eventually(requeued, 5)
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.PENDING


async def test_rejected_registration_stops_the_worker(gateway: Gateway) -> None:
    worker = Worker(gateway.target, worker_id="x" * 200)
    builtin_handlers.register_builtins(worker)
    with pytest.raises(RegistrationRejected, match="worker_id"):
        await asyncio.wait_for(worker.run(), 10)
