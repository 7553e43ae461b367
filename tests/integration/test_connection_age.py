"""A worker stream across the gateway's connection-age limit: no work is lost either way it ends.

The gateway sends GOAWAY when a connection reaches DISPATCHD_MAX_CONNECTION_AGE_SECONDS; calls
open then run for the grace, then the connection is closed under them. A worker stream cut
that way (UNAVAILABLE) is lost: its running handler is cancelled and the gateway re-queues the
execution, which the reconnected worker runs again. With no grace limit (what the deploy
manifests give the gateway) the worker ends the stream itself (`max_stream_seconds`): a drain,
so its running handler finishes and reports on the old stream before it reconnects.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import jobs
from dispatchd.sdk import Task, Worker
from tests.support.factories import Workers
from tests.support.polling import eventually
from tests.support.submissions import submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class Slow:
    """A handler that takes `seconds` on the attempts listed in `slow_attempts`, no time on the others."""

    def __init__(self, seconds: float, slow_attempts: set[int]) -> None:
        self.seconds = seconds
        self.slow_attempts = slow_attempts
        self.attempts: list[int] = []

    async def __call__(self, task: Task) -> dict[str, int]:
        self.attempts.append(task.attempt)
        if task.attempt in self.slow_attempts:
            await asyncio.sleep(self.seconds)
        return {"attempt": task.attempt}

    def register(self, worker: Worker) -> None:
        worker.register("aged", self)


async def _succeeded(pool: asyncpg.Pool, job_id: object, timeout: float = 30.0) -> dict[str, object]:
    async def done() -> bool:
        return (await jobs.get(pool, job_id)).status is JobStatus.SUCCEEDED  # type: ignore[arg-type]

    await eventually(done, timeout)
    job = await jobs.get(pool, job_id)  # type: ignore[arg-type]
    return {"result": job.result, "attempts": job.attempts}


def _age(grace: str) -> pytest.MarkDecorator:
    """The `gateway` fixture's GOAWAY at ~1.5 s, then `grace` ("0": calls run until they end)."""
    env = {"DISPATCHD_MAX_CONNECTION_AGE_SECONDS": "1.5", "DISPATCHD_MAX_CONNECTION_AGE_GRACE_SECONDS": grace}
    return pytest.mark.parametrize("gateway_env", [env])


@_age(grace="1")
async def test_a_stream_cut_after_the_grace_requeues_its_execution(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    # The first attempt outlives any connection (age ≤ 1.65 s + 1 s grace); a later one is quick.
    handler = Slow(seconds=6.0, slow_attempts={1})
    worker = workers(register=handler.register, max_stream_seconds=None)
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "aged", max_attempts=5)).job.job_id
    outcome = await _succeeded(db_pool, job_id)
    assert handler.attempts[0] == 1 and len(handler.attempts) >= 2
    assert outcome["result"] == f'{{"attempt":{handler.attempts[-1]}}}'.encode()
    assert worker.connections >= 2  # it reconnected after the cut
    # Quick jobs keep flowing across further cuts, none lost.
    quick = [(await submit(db_pool, redis_client, "aged", max_attempts=5)).job.job_id for _ in range(10)]
    for quick_id in quick:
        await asyncio.sleep(0.3)
        await _succeeded(db_pool, quick_id)


@_age(grace="0")
async def test_a_worker_recycling_its_stream_lets_the_running_handler_report(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    handler = Slow(seconds=2.5, slow_attempts={1})
    # The worker drains at 0.9-1.0 s, the GOAWAY follows at ~1.5 s; neither cuts the 2.5 s handler,
    # which reports on the draining stream before the worker reconnects.
    worker = workers(register=handler.register, max_stream_seconds=1.0)
    await asyncio.wait_for(worker.registered.wait(), 10)
    job_id = (await submit(db_pool, redis_client, "aged", max_attempts=1)).job.job_id
    outcome = await _succeeded(db_pool, job_id)
    assert handler.attempts == [1] and outcome["result"] == b'{"attempt":1}'
    await eventually(lambda: _connected_again(worker), 10)


async def _connected_again(worker: Worker) -> bool:
    return worker.connections >= 2
