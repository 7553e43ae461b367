"""Priorities on the hot path: higher first, FIFO within a priority, aging against starvation.

The rule (queues.py, README): score = due_ms - priority * aging_ms, lowest first. So an
execution's effective priority rises by 1 for every `priority_aging_seconds` it waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.v1 import worker_service_pb2 as pb
from tests.support.factories import Streams
from tests.support.submissions import PREFIX, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = dt.datetime.now(dt.UTC)


def ref(name: int, priority: int, waited_seconds: float, job_type: str = "t") -> QueuedRef:
    return QueuedRef(uuid.UUID(int=name), job_type, priority, NOW - dt.timedelta(seconds=waited_seconds))


async def order(queues: ReadyQueues, refs: list[QueuedRef], job_types: tuple[str, ...] = ("t",)) -> list[int]:
    await queues.push(refs)
    popped = await queues.pop(list(job_types), len(refs) + 1)
    return [uuid.UUID(p).int for p in popped]


async def test_higher_priority_first_and_fifo_within_a_priority(redis_client: redis.asyncio.Redis) -> None:
    queues = ReadyQueues(redis_client, PREFIX, aging_seconds=10)
    refs = [ref(1, 0, 3.0), ref(2, 5, 0.5), ref(3, 5, 0.6), ref(4, 10, 0.0), ref(5, 5, 0.4), ref(6, 0, 2.0)]
    assert await order(queues, refs) == [4, 3, 2, 5, 1, 6]


async def test_aging_lifts_a_waiting_low_priority_above_newer_high_priority(
    redis_client: redis.asyncio.Redis,
) -> None:
    queues = ReadyQueues(redis_client, PREFIX, aging_seconds=1)
    # Priority 0 that waited 10.5 s counts as 10.5: ahead of a priority 10 that just arrived,
    # behind a priority 11 that just arrived.
    assert await order(queues, [ref(1, 10, 0), ref(2, 0, 10.5), ref(3, 11, 0)]) == [3, 2, 1]
    # Waited only 9.5 s: still behind.
    assert await order(queues, [ref(1, 10, 0), ref(2, 0, 9.5)]) == [1, 2]


async def test_aging_applies_across_the_queues_a_worker_takes_from(redis_client: redis.asyncio.Redis) -> None:
    queues = ReadyQueues(redis_client, PREFIX, aging_seconds=1)
    refs = [ref(1, 10, 0, "a"), ref(2, 0, 20, "b"), ref(3, 5, 0, "b"), ref(4, 0, 0, "a")]
    assert await order(queues, refs, ("a", "b")) == [2, 1, 3, 4]


async def test_zero_aging_means_strict_priorities(redis_client: redis.asyncio.Redis) -> None:
    queues = ReadyQueues(redis_client, PREFIX, aging_seconds=0)
    assert await order(queues, [ref(1, 1, 0), ref(2, 0, 3600), ref(3, 1, 1)]) == [3, 1, 2]


async def test_a_worker_receives_queued_work_in_priority_order(
    streams: Streams,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    submitted = {}
    for priority in (0, 7, 3, 7, 0, 1000, 3):
        job_id = (await submit(db_pool, redis_client, "prio", priority=priority)).job.job_id
        submitted[str(job_id)] = priority
        await asyncio.sleep(0.002)  # distinct due times (ms resolution) keep FIFO well defined
    stream = streams()
    await stream.register("w1", ["prio"], max_concurrency=1)
    received = []
    for _ in submitted:
        assignment = await stream.expect("assignment")
        received.append(assignment.job_id)
        await stream.send(result=pb.TaskResult(execution_id=assignment.execution_id, success=True))
    priorities = [submitted[j] for j in received]
    assert priorities == [1000, 7, 7, 3, 3, 0, 0]
    # FIFO within a priority: submit order (job rows carry their creation time).
    created = {
        str(r["job_id"]): r["created_at"] for r in await db_pool.fetch("SELECT job_id, created_at FROM jobs")
    }
    for p in (7, 3, 0):
        same = [j for j in received if submitted[j] == p]
        assert same == sorted(same, key=lambda j: created[j])
