"""Batches on the worker stream: negotiated at registration, each item handled as if alone.

The gateway runs as its own process against real Postgres and Redis; raw streams play
the worker, and the SDK worker runs the same jobs with batches on and off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import jobs
from dispatchd.sdk import Task, Worker
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.servicer import MAX_BATCH_ITEMS
from tests.support.factories import GatewayWith, Streams, Workers
from tests.support.polling import eventually
from tests.support.streams import WorkerStream
from tests.support.submissions import PREFIX, submit

pytestmark = pytest.mark.integration

ACCEPTED, STALE, REJECTED = pb.ACK_STATUS_ACCEPTED, pb.ACK_STATUS_STALE, pb.ACK_STATUS_REJECTED


async def _submit(pool: asyncpg.Pool, redis_client: redis.asyncio.Redis, count: int) -> list[uuid.UUID]:
    return [(await submit(pool, redis_client, "echo", f"{i}".encode())).job.job_id for i in range(count)]


def _results(*execution_ids: str) -> pb.TaskResultBatch:
    results = [pb.TaskResult(execution_id=e, success=True, result=b"ok") for e in execution_ids]
    return pb.TaskResultBatch(results=results)


async def _still_serves(stream: WorkerStream) -> None:
    """The stream lives: a heartbeat is still answered."""
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1"))
    assert (await stream.expect("ack", 5, "heartbeat")).status == ACCEPTED


async def test_a_batching_worker_gets_assignments_and_acks_in_batches(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_ids = await _submit(db_pool, redis_client, 10)
    stream = streams()
    ack = await stream.register("w1", ["echo"], max_concurrency=10, batches=True)
    assert ack.supports_batches
    assignments = await stream.assignments(10)
    assert any(kind == "assignment_batch" and items > 1 for kind, items in stream.received), stream.received
    await stream.send(result_batch=_results(*(a.execution_id for a in assignments)))
    acks = await stream.acks("result", 10)
    assert {a.execution_id for a in assignments} == set(acks)
    assert all(a.status == ACCEPTED for a in acks.values())
    # Acks queued together go out together (rejections are queued at once, with no store write between).
    await stream.send(started_batch=pb.TaskStartedBatch(started=[pb.TaskStarted(execution_id="bad")] * 5))
    assert [(await stream.expect("ack", 5, "started")).status for _ in range(5)] == [REJECTED] * 5
    assert ("ack_batch", 5) in stream.received, stream.received
    for job_id in job_ids:
        job = await jobs.get(db_pool, job_id)
        assert job.status is JobStatus.SUCCEEDED and job.result == b"ok"


async def test_each_item_of_a_batch_is_acknowledged_as_if_alone(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    await _submit(db_pool, redis_client, 2)
    stream = streams()
    await stream.register("w1", ["echo"], max_concurrency=2, batches=True)
    first, second = await stream.assignments(2)
    stale = str(uuid.uuid4())
    started = pb.TaskStartedBatch(started=[pb.TaskStarted(execution_id=first.execution_id)] * 2)
    await stream.send(started_batch=started)
    assert [(await stream.expect("ack", 5, "started")).status for _ in range(2)] == [ACCEPTED, STALE]
    await stream.send(result_batch=_results(first.execution_id, "not-a-uuid", stale, second.execution_id))
    acks = [await stream.expect("ack", 5, "result") for _ in range(4)]
    by_id = {a.execution_id: a.status for a in acks}
    assert by_id == {first.execution_id: ACCEPTED, "": REJECTED, stale: STALE, second.execution_id: ACCEPTED}
    await _still_serves(stream)


async def test_a_batch_the_stream_did_not_negotiate_is_rejected(
    streams: Streams, gateway_with: GatewayWith, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    await _submit(db_pool, redis_client, 2)
    plain = streams()
    assert not (await plain.register("w1", ["echo"], max_concurrency=1)).supports_batches
    # The worker asks, but this gateway does not offer batches.
    refused = streams(gateway_with(DISPATCHD_STREAM_BATCHES="false").target)
    assert not (await refused.register("w2", ["echo"], max_concurrency=1, batches=True)).supports_batches
    for stream in (plain, refused):
        (assignment,) = await stream.assignments(1)
        await stream.send(result_batch=_results(assignment.execution_id))
        ack = await stream.expect("ack", 5, "result_batch")
        assert ack.status == REJECTED and "not negotiated" in ack.message
        # Nothing of the batch was applied; the same result sent alone is.
        assert (await stream.result(assignment.execution_id)).status == ACCEPTED


async def test_an_oversized_or_empty_batch_is_rejected_and_the_stream_lives(streams: Streams) -> None:
    stream = streams()
    await stream.register("w1", ["echo"], batches=True)
    too_many = [pb.TaskStarted(execution_id=str(uuid.uuid4())) for _ in range(MAX_BATCH_ITEMS + 1)]
    for batch in (pb.TaskStartedBatch(started=too_many), pb.TaskStartedBatch()):
        await stream.send(started_batch=batch)
        ack = await stream.expect("ack", 5, "started_batch")
        assert ack.status == REJECTED and f"1 to {MAX_BATCH_ITEMS} items" in ack.message
    await _still_serves(stream)
    await stream.nothing("ack", 0.3)  # no item of either batch was applied


async def test_a_reference_client_never_receives_a_batch(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    await _submit(db_pool, redis_client, 10)
    stream = streams()
    await stream.register("w1", ["echo"], max_concurrency=10)
    assignments = await stream.assignments(10)
    for assignment in assignments:  # sent without waiting: acks queue up together at the gateway
        await stream.send(result=pb.TaskResult(execution_id=assignment.execution_id, success=True))
    assert all(a.status == ACCEPTED for a in (await stream.acks("result", 10)).values())
    assert {kind for kind, _ in stream.received} == {"ack", "assignment"}


async def test_cancel_and_drain_keep_their_place_among_batches(
    streams: Streams, gateway_with: GatewayWith, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    gateway = gateway_with()
    job_ids = await _submit(db_pool, redis_client, 3)
    stream = streams(gateway.target)
    await stream.register("w1", ["echo"], max_concurrency=3, batches=True)
    assignments = await stream.assignments(3)
    by_job = {uuid.UUID(a.job_id): a for a in assignments}
    cancelled = by_job[job_ids[0]].execution_id
    await jobs.cancel(db_pool, job_ids[0], "user asked")
    await ReadyQueues(redis_client, PREFIX).publish_cancel(cancelled, "w1", "user asked")
    assert (await stream.expect("cancel", 5)).execution_id == cancelled
    os.kill(gateway.process.pid, signal.SIGTERM)
    assert (await stream.expect("drain_signal", 5)).reason == "gateway shutting down"
    # In-flight work still finishes in one batch during the grace period; the cancelled one is stale.
    await stream.send(result_batch=_results(*(a.execution_id for a in assignments)))
    acks = await stream.acks("result", 3)
    assert acks[cancelled].status == STALE
    assert [acks[by_job[j].execution_id].status for j in job_ids[1:]] == [ACCEPTED, ACCEPTED]
    assert await stream.ended() == grpc.StatusCode.OK
    # The cancel and the drain signal came alone, in order, after the assignments.
    kinds = [kind for kind, _ in stream.received]
    last_assignment = max(i for i, k in enumerate(kinds) if k.startswith("assignment"))
    assert last_assignment < kinds.index("cancel") < kinds.index("drain_signal")
    assert [(await jobs.get(db_pool, j)).status for j in job_ids] == [
        JobStatus.CANCELED,
        JobStatus.SUCCEEDED,
        JobStatus.SUCCEEDED,
    ]


@pytest.mark.parametrize("batches", [True, False])
async def test_sdk_worker_runs_jobs_with_batches_on_and_off(
    workers: Workers, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis, batches: bool
) -> None:
    async def upper(task: Task) -> bytes:
        return task.payload.upper()

    def register(worker: Worker) -> None:
        worker.register("text", upper)

    worker = workers(register=register, worker_id="sdk-b", max_concurrency=16, batches=batches)
    await asyncio.wait_for(worker.registered.wait(), 10)
    assert worker._stream is not None and worker._stream.outbox.batching is batches
    job_ids = [(await submit(db_pool, redis_client, "text.x", f"job {i}".encode())).job.job_id for i in range(60)]

    async def all_succeeded() -> bool:
        statuses = await db_pool.fetch("SELECT status FROM jobs WHERE job_id = ANY($1::uuid[])", job_ids)
        return all(r["status"] == JobStatus.SUCCEEDED for r in statuses)

    await eventually(all_succeeded, 20)
    for i, job_id in enumerate(job_ids):
        assert (await jobs.get(db_pool, job_id)).result == f"JOB {i}".encode()
