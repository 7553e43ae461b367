"""Worker gateway: what happens when streams end, workers re-register, jobs are cancelled
and the gateway itself drains."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.devtools.stores import PostgresInstance
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.v1 import worker_service_pb2 as pb
from tests.support.factories import GatewayWith, Streams
from tests.support.polling import eventually
from tests.support.submissions import PREFIX, submit

pytestmark = pytest.mark.integration

async def _statuses(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[tuple[int, int, str]]:
    rows = await pool.fetch(
        "SELECT attempt, status, coalesce(worker_id, '') AS worker_id FROM executions"
        " WHERE job_id = $1 ORDER BY attempt",
        job_id,
    )
    return [(r["attempt"], r["status"], r["worker_id"]) for r in rows]


async def test_closed_stream_requeues_to_another_worker(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "video.encode", max_attempts=3)).job.job_id
    first = streams()
    await first.register("w1", ["video"])
    assignment = await first.expect("assignment")
    second = streams()
    await second.register("w2", ["video"])
    await first.close()
    again = await second.expect("assignment", 3)
    assert again.job_id == str(job_id) and again.attempt == 2
    history = await _statuses(db_pool, job_id)
    assert history[0] == (1, ExecutionStatus.FAILED, "w1")
    assert history[1] == (2, ExecutionStatus.CLAIMED, "w2")
    error = await db_pool.fetchval(
        "SELECT error_message FROM executions WHERE execution_id = $1", uuid.UUID(assignment.execution_id)
    )
    assert error == "worker stream closed"

    async def offline() -> bool:
        status = await db_pool.fetchval("SELECT status FROM workers WHERE worker_id = 'w1'")
        return bool(status == pb.WORKER_STATUS_OFFLINE)

    await eventually(offline)


async def test_half_closed_stream_ends_and_releases(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    stream = streams()
    await stream.register("w1", ["echo"])
    assignment = await stream.expect("assignment")
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id=assignment.execution_id, message="bye"))
    await stream.call.done_writing()
    assert await stream.ended() == grpc.StatusCode.OK
    assert (await stream.expect("ack", ack_kind="log")).status == pb.ACK_STATUS_ACCEPTED  # landed before the end
    history = await _statuses(db_pool, job_id)
    assert [h[:2] for h in history] == [(1, ExecutionStatus.FAILED), (2, ExecutionStatus.QUEUED)]


async def test_reregistration_releases_old_claims(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_ids = [(await submit(db_pool, redis_client, "echo")).job.job_id for _ in range(2)]
    old = streams()
    await old.register("w1", ["echo"], max_concurrency=2)
    await old.assignments(2)
    new = streams()
    await new.register("w1", ["echo"], max_concurrency=2)
    again = await new.assignments(2)
    assert {a.job_id for a in again} == {str(j) for j in job_ids}
    assert {a.attempt for a in again} == {2}
    for job_id in job_ids:
        first = await db_pool.fetchrow(
            "SELECT status, error_message FROM executions WHERE job_id = $1 AND attempt = 1", job_id
        )
        assert first is not None
        assert (first["status"], first["error_message"]) == (ExecutionStatus.FAILED, "worker re-registered")
    # The superseded stream is ended; the new one keeps working.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await old.expect("nothing-ever", 5)
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert (await new.result(again[0].execution_id)).status == pb.ACK_STATUS_ACCEPTED
    session = await db_pool.fetchval("SELECT status FROM workers WHERE worker_id = 'w1'")
    assert session == pb.WORKER_STATUS_READY


async def test_cancel_reaches_the_worker(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    stream = streams()
    await stream.register("w1", ["echo"], max_concurrency=1)
    assignment = await stream.expect("assignment")
    cancelled = await jobs.cancel(db_pool, job_id, "user asked")
    assert cancelled.stopped == [(uuid.UUID(assignment.execution_id), "w1")]
    await ReadyQueues(redis_client, PREFIX).publish_cancel(assignment.execution_id, "w1", "user asked")
    cancel = await stream.expect("cancel", 3)
    assert cancel.execution_id == assignment.execution_id and cancel.reason == "user asked"
    # Still counted in flight until the worker answers: nothing new is sent meanwhile.
    await submit(db_pool, redis_client, "echo")
    await stream.nothing("assignment", 0.4)
    ack = await stream.result(assignment.execution_id, success=False, error="cancelled")
    assert ack.status == pb.ACK_STATUS_STALE
    await stream.expect("assignment", 2)
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.CANCELED


async def test_cancel_of_unknown_execution_is_ignored(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = streams()
    await stream.register("w1", ["echo"])
    await redis_client.publish("dispatchd:events:cancel", "not json")
    await ReadyQueues(redis_client, PREFIX).publish_cancel(str(uuid.uuid4()), "w1", "whatever")
    await stream.nothing("cancel", 0.3)
    await submit(db_pool, redis_client, "echo")
    await stream.expect("assignment", 2)


async def test_sigterm_drains_streams(
    streams: Streams,
    gateway_with: GatewayWith,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    gateway = gateway_with(DISPATCHD_SHUTDOWN_GRACE_SECONDS="3")  # long enough to report after the drain
    stream = streams(gateway.target)
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    await stream.register("w1", ["echo"])
    assignment = await stream.expect("assignment")
    os.kill(gateway.process.pid, signal.SIGTERM)
    drain = await stream.expect("drain_signal", 5)
    assert drain.reason == "gateway shutting down"
    await submit(db_pool, redis_client, "echo")
    await stream.nothing("assignment", 0.3)
    # In-flight work may still finish during the grace period.
    assert (await stream.result(assignment.execution_id, result=b"ok")).status == pb.ACK_STATUS_ACCEPTED
    assert await stream.ended() == grpc.StatusCode.OK
    assert await asyncio.to_thread(gateway.process.wait, 10) == 0
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.SUCCEEDED


async def test_drain_grace_then_release(
    streams: Streams,
    gateway_with: GatewayWith,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    gateway = gateway_with(DISPATCHD_SHUTDOWN_GRACE_SECONDS="1")
    stream = streams(gateway.target)
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    await stream.register("w1", ["echo"])
    await stream.expect("assignment")
    os.kill(gateway.process.pid, signal.SIGTERM)
    await stream.expect("drain_signal", 5)
    assert await stream.ended(10) == grpc.StatusCode.OK
    assert await asyncio.to_thread(gateway.process.wait, 10) == 0
    history = await _statuses(db_pool, job_id)
    assert [h[:2] for h in history] == [(1, ExecutionStatus.FAILED), (2, ExecutionStatus.QUEUED)]


async def test_new_streams_are_refused_while_draining(
    streams: Streams,
    gateway_with: GatewayWith,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    gateway = gateway_with(DISPATCHD_SHUTDOWN_GRACE_SECONDS="3")
    busy = streams(gateway.target)
    await submit(db_pool, redis_client, "echo")
    await busy.register("w1", ["echo"])
    await busy.expect("assignment")
    os.kill(gateway.process.pid, signal.SIGTERM)
    await busy.expect("drain_signal", 5)
    late = streams(gateway.target)
    await late.offer("w2", ["echo"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await late.read(5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_postgres_outage_ends_streams_until_it_is_back(pg_instance: PostgresInstance, streams: Streams) -> None:
    if os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("0", "false"):
        # Restarting Postgres forks this process, whose gRPC threads make gRPC's at-fork
        # handlers crash the child now and then.
        pytest.skip("needs GRPC_ENABLE_FORK_SUPPORT=false in the test process")
    stream, retry, again = streams(), streams(), streams()
    await stream.register("w1", ["echo"])
    await asyncio.to_thread(pg_instance.stop)
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1"))
    assert await stream.ended(10) == grpc.StatusCode.UNAVAILABLE
    await retry.offer("w1", ["echo"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await retry.read(10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.to_thread(pg_instance.start)
    await again.register("w1", ["echo"])
    await again.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1"))
    assert (await again.expect("ack", ack_kind="heartbeat")).status == pb.ACK_STATUS_ACCEPTED
