"""The live views' moving parts on real stores: batched log notices, one subscription per
control-plane process fanning job events and notices out to watches and log followers, and
the log pages they read (attempt order, a byte budget per page)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio

from dispatchd.control_plane.job_feed import Filter
from dispatchd.control_plane.observe import ObserveEvents
from dispatchd.platform.errors import NotFound
from dispatchd.platform.job_events import JobEvent, Kind
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import executions, logs, workers
from dispatchd.worker_gateway.log_notices import LogNotices
from tests.support.polling import eventually
from tests.support.submissions import first_attempt, submit

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def queues(redis_client: redis.asyncio.Redis) -> ReadyQueues:
    return ReadyQueues(redis_client, f"obs-{uuid.uuid4().hex[:8]}")


async def _subscribed(client: redis.asyncio.Redis, channel: str) -> redis.asyncio.client.PubSub:
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"  # type: ignore[index]
    return pubsub


async def test_log_notices_are_one_message_per_window(queues: ReadyQueues) -> None:
    pubsub = await _subscribed(queues.client, queues.keys.log_channel)
    try:
        notices = LogNotices(queues, window=0.05)
        ids = [uuid.uuid4() for _ in range(3)]
        for _ in range(100):  # a chatty burst of chunks from three executions
            for execution_id in ids:
                notices.stored(execution_id)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and sorted(json.loads(message["data"])) == sorted(map(str, ids))
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
        notices.stored(ids[0])  # a later line: a new window, a new notice
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and json.loads(message["data"]) == [str(ids[0])]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest_asyncio.fixture
async def observed(queues: ReadyQueues) -> AsyncIterator[ObserveEvents]:
    events = ObserveEvents(queues)
    task = asyncio.create_task(events.run())
    async with events.held() as subscribed:
        assert subscribed
        yield events
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_one_subscription_feeds_every_watch_and_follower(
    queues: ReadyQueues, observed: ObserveEvents, redis_client: redis.asyncio.Redis
) -> None:
    execution_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    feed, wakeups = observed.feed, observed.wakeups
    with (
        feed.watch(Filter()) as everything,
        feed.watch(Filter(job_id=job_id)) as one_job,
        wakeups.watch_keys([execution_id]) as line_stored,
        wakeups.watch_keys([job_id]) as job_moved,
    ):
        await queues.publish_log_notice([execution_id])
        await asyncio.wait_for(line_stored, 2)
        assert not job_moved.done()
        # Submitted (activity channel, in the submit's pipeline), then terminal (job channel).
        await queues.enqueue([], [JobEvent(job_id, "t", Kind.SUBMITTED, int(JobStatus.PENDING), 1)])
        await queues.publish_job_event(job_id, int(JobStatus.SUCCEEDED), "t")
        for watch in (everything, one_job):
            got = [await asyncio.wait_for(watch.next(), 2) for _ in range(2)]
            assert [(d.event.job_id, d.event.kind) for d in got if d.event] == [
                (job_id, Kind.SUBMITTED),
                (job_id, Kind.SUCCEEDED),
            ]
        await asyncio.wait_for(job_moved, 2)
    # One connection for all of them: this process's subscription is the only subscriber.
    counts = dict(await redis_client.pubsub_numsub(queues.keys.job_channel, queues.keys.log_channel))
    assert set(counts.values()) == {1}


async def test_log_pages_keep_attempt_order_and_a_byte_budget(db_pool: asyncpg.Pool) -> None:
    submitted = await submit(db_pool, job_type="obs.logs", max_attempts=2)
    execution_id = first_attempt(submitted).execution_id
    session = uuid.uuid4()
    assert await executions.claim(db_pool, [execution_id], worker_id="w", session_id=session, lease_seconds=30)
    big = "x" * (logs.PAGE_BYTES // 2 + 1)  # two do not fit in one page
    for message in ("a", big, big, "b"):
        assert await workers.append_log(db_pool, execution_id, session, "stdout", message, None)
    of = await logs.target(db_pool, job_id=submitted.job.job_id, execution_id=None)
    assert await logs.state(db_pool, of) == (False, [execution_id])

    first, more = await logs.page(db_pool, of, 0, 10)
    assert [len(r.message) for r in first] == [1, len(big)] and more  # cut by bytes, not by count
    second, more = await logs.page(db_pool, of, first[-1].log_id, 10)
    assert [r.message for r in second] == [big, "b"] and not more
    # A settled attempt stores nothing more: its lines are final, and so is the state.
    settled = await executions.fail(db_pool, execution_id, executions.Owner(), "boom", retry_delay_ms=0)
    assert settled.applied and settled.retry is not None
    assert not await workers.append_log(db_pool, execution_id, session, "stdout", "late", None)
    done, attempts = await logs.state(db_pool, of)
    assert not done and attempts == [execution_id, settled.retry.execution_id]
    one = await logs.target(db_pool, job_id=None, execution_id=execution_id)
    assert (await logs.state(db_pool, one))[0] and one.job_id == submitted.job.job_id
    with pytest.raises(NotFound, match="execution"):
        await logs.target(db_pool, job_id=None, execution_id=uuid.uuid4())


async def test_the_subscription_is_held_only_while_someone_watches(
    queues: ReadyQueues, redis_client: redis.asyncio.Redis
) -> None:
    # Every job event reaches every control plane: with nobody watching, none should listen.
    events = ObserveEvents(queues, linger_seconds=0.2)
    task = asyncio.create_task(events.run())

    async def subscribers() -> int:
        ((_, count),) = await redis_client.pubsub_numsub(queues.keys.job_channel)
        return int(count)

    try:
        await asyncio.sleep(0.2)
        assert await subscribers() == 0
        async with events.held() as subscribed:
            assert subscribed and await subscribers() == 1
            with events.feed.watch(Filter()) as watch:
                await queues.publish_job_event(str(uuid.uuid4()), int(JobStatus.SUCCEEDED), "t")
                delivery = await asyncio.wait_for(watch.next(), 2)
                assert delivery is not None and not delivery.gap  # the first confirmation is no gap
        await eventually(lambda: _none(subscribers), 3, "the subscription ends after the linger")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _none(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0
