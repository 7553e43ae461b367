"""Worker gateway: registration, push dispatch, routing, concurrency and results.

The gateway runs as its own process against real Postgres and Redis; the tests drive
it with raw Connect streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.dispatcher import SAFETY_NET_SECONDS
from tests.support.factories import GatewayWith, Streams
from tests.support.submissions import submit

pytestmark = pytest.mark.integration

async def _execution(pool: asyncpg.Pool, job_id: uuid.UUID, attempt: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM executions WHERE job_id = $1 AND attempt = $2", job_id, attempt)
    assert row is not None
    return row


async def test_first_message_must_be_a_registration(streams: Streams) -> None:
    stream = streams()
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read(5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "first message must be a registration" in (info.value.details() or "")


@pytest.mark.parametrize(
    ("worker_id", "capabilities", "max_concurrency", "needle"),
    [
        ("", ["email"], 1, "worker_id"),
        ("x" * 129, ["email"], 1, "worker_id"),
        ("w", [], 1, "capabilities"),
        ("w", ["Email!"], 1, "not a valid job type"),
        ("w", ["email"], -1, "max_concurrency"),
        ("w", ["email"], 1001, "max_concurrency"),
    ],
)
async def test_invalid_registration_is_rejected(
    streams: Streams, worker_id: str, capabilities: list[str], max_concurrency: int, needle: str
) -> None:
    stream = streams()
    registration = pb.WorkerRegistration(
        worker_id=worker_id, capabilities=capabilities, max_concurrency=max_concurrency
    )
    await stream.send(registration=registration)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read(5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (info.value.details() or "")


async def test_registration_ack_precedes_assignments_of_waiting_work(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    for _ in range(3):
        await submit(db_pool, redis_client, "email.send")
    stream = streams()
    await stream.register("w1", ["email"], max_concurrency=8)  # asserts the first message is the ack
    assert len(await stream.assignments(3)) == 3
    row = await db_pool.fetchrow("SELECT status, max_concurrency, capabilities FROM workers WHERE worker_id = 'w1'")
    assert row is not None and row["status"] == 1 and row["max_concurrency"] == 8
    assert row["capabilities"] == ["email"]


async def test_work_is_pushed_at_once_without_heartbeats(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = streams()
    await stream.register("w1", ["email.send"], max_concurrency=0)  # 0 means 1
    rounds = 6
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(rounds):
        # Let the pass woken by the freed slot find nothing: from here on only the queue's
        # notification (or the 1 s safety-net tick) can wake the dispatcher.
        await asyncio.sleep(0.05)
        submitted = await submit(db_pool, redis_client, "email.send", f"hello {i}".encode(), metadata={"k": "v"})
        assignment = await stream.expect("assignment", 2)
        assert assignment.job_id == str(submitted.job.job_id) and assignment.payload == f"hello {i}".encode()
        assert assignment.attempt == 1 and assignment.job_type == "email.send"
        assert dict(assignment.metadata) == {"k": "v"}
        assert assignment.lease_expires_at.seconds > time.time()
        assert (await stream.result(assignment.execution_id)).status == pb.ACK_STATUS_ACCEPTED
    took = loop.time() - started
    print(f"\n{rounds} submit-to-assignment rounds in {took * 1000:.0f} ms")
    # Each round waiting for the safety-net tick would take about a second: only the push
    # can finish them all in half that (the latency itself is measured in perf/).
    assert took < rounds * SAFETY_NET_SECONDS / 2


async def test_capabilities_route_by_namespace(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    narrow = streams()
    await narrow.register("narrow", ["email.send"], max_concurrency=10)
    weekly = (await submit(db_pool, redis_client, "email.digest.weekly")).job.job_id
    await submit(db_pool, redis_client, "sms.send")
    await narrow.nothing("assignment", 0.5)
    broad = streams()
    await broad.register("broad", ["email"], max_concurrency=10)
    assert (await broad.expect("assignment")).job_id == str(weekly)
    send = (await submit(db_pool, redis_client, "email.send")).job.job_id
    # Either stream may take email.send; the narrow one must never see the digest or sms.
    got = await asyncio.wait(
        [asyncio.create_task(narrow.expect("assignment")), asyncio.create_task(broad.expect("assignment"))],
        return_when=asyncio.FIRST_COMPLETED,
    )
    done = got[0].pop().result()
    for task in got[1]:
        task.cancel()
    assert done.job_id == str(send)
    await broad.nothing("assignment", 0.3)


async def test_max_concurrency_is_never_exceeded(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    for _ in range(5):
        await submit(db_pool, redis_client, "report")
    stream = streams()
    await stream.register("w1", ["report"], max_concurrency=2)
    first = await stream.assignments(2)
    # Whatever the worker reports, the gateway counts its own assignments.
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1", status=pb.WORKER_STATUS_READY))
    await stream.nothing("assignment", 0.6)
    await stream.result(first[0].execution_id)
    third = await stream.expect("assignment", 2)
    await stream.nothing("assignment", 0.4)
    assert third.execution_id not in {a.execution_id for a in first}


async def test_success_result_completes_the_job(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("dispatchd:events:job")
    job_id = (await submit(db_pool, redis_client, "echo", b"ping")).job.job_id
    stream = streams()
    await stream.register("w1", ["echo"])
    assignment = await stream.expect("assignment")
    await stream.send(started=pb.TaskStarted(execution_id=assignment.execution_id))
    started = await stream.expect("ack", ack_kind="started")
    assert started.status == pb.ACK_STATUS_ACCEPTED
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.RUNNING
    ack = await stream.result(assignment.execution_id, result=b"pong")
    assert ack.status == pb.ACK_STATUS_ACCEPTED and ack.execution_id == assignment.execution_id
    job = await jobs.get(db_pool, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result == b"pong"
    execution = await _execution(db_pool, job_id, 1)
    assert execution["status"] == ExecutionStatus.SUCCEEDED and execution["worker_id"] == "w1"
    async with asyncio.timeout(3):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                break
    assert str(job_id).encode() in message["data"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_failures_retry_then_dead_letter(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "flaky", max_attempts=2, initial_backoff_ms=0)).job.job_id
    stream = streams()
    await stream.register("w1", ["flaky"])
    first = await stream.expect("assignment")
    ack = await stream.result(first.execution_id, success=False, error="boom 1", result=b"partial")
    assert ack.status == pb.ACK_STATUS_ACCEPTED
    assert (await _execution(db_pool, job_id, 1))["result"] == b"partial"
    second = await stream.expect("assignment", 2)  # pushed at once: backoff 0
    assert second.attempt == 2 and second.job_id == str(job_id)
    await stream.result(second.execution_id, success=False, error="boom 2")
    job = await jobs.get(db_pool, job_id)
    assert job.status is JobStatus.FAILED and job.error_message == "boom 2"
    assert (await _execution(db_pool, job_id, 2))["status"] == ExecutionStatus.DEAD_LETTERED
    await stream.nothing("assignment", 0.3)


async def test_delayed_retry_is_not_pushed_early(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "slow", max_attempts=3, initial_backoff_ms=60_000)).job.job_id
    stream = streams()
    await stream.register("w1", ["slow"])
    first = await stream.expect("assignment")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("dispatchd:events:scheduler")
    await stream.result(first.execution_id, success=False, error="later")
    second = await _execution(db_pool, job_id, 2)
    assert second["status"] == ExecutionStatus.QUEUED
    await stream.nothing("assignment", 0.3)
    async with asyncio.timeout(3):
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is None:
            pass
    assert abs(float(message["data"]) - second["available_at"].timestamp()) < 0.01
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_duplicate_late_and_malformed_results(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    stream = streams()
    await stream.register("w1", ["echo"], max_concurrency=1)
    assignment = await stream.expect("assignment")
    assert (await stream.result(assignment.execution_id, result=b"a")).status == pb.ACK_STATUS_ACCEPTED
    duplicate = await stream.result(assignment.execution_id, result=b"b")
    assert duplicate.status == pb.ACK_STATUS_STALE
    late_failure = await stream.result(assignment.execution_id, success=False, error="late")
    assert late_failure.status == pb.ACK_STATUS_STALE
    unknown = await stream.result(str(uuid.uuid4()))
    assert unknown.status == pb.ACK_STATUS_STALE
    await stream.send(result=pb.TaskResult(execution_id=str(uuid.uuid4()), success=False, error_message="a\x00b"))
    assert (await stream.expect("ack", ack_kind="result")).status == pb.ACK_STATUS_STALE
    malformed = await stream.result("not-a-uuid")
    assert malformed.status == pb.ACK_STATUS_REJECTED and "UUID" in malformed.message
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id="nope", message="x"))
    assert (await stream.expect("ack", ack_kind="log")).status == pb.ACK_STATUS_REJECTED
    job = await jobs.get(db_pool, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result == b"a"
    # The stream still works: new work arrives and is accepted.
    second = (await submit(db_pool, redis_client, "echo")).job.job_id
    assignment = await stream.expect("assignment")
    assert assignment.job_id == str(second)
    assert (await stream.result(assignment.execution_id)).status == pb.ACK_STATUS_ACCEPTED


async def test_oversized_result_is_rejected(
    streams: Streams,
    gateway_with: GatewayWith,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    gateway = gateway_with(DISPATCHD_MAX_PAYLOAD_BYTES="10")
    stream = streams(gateway.target)
    await stream.register("w1", ["echo"])
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    assignment = await stream.expect("assignment")
    ack = await stream.result(assignment.execution_id, result=b"x" * 11)
    assert ack.status == pb.ACK_STATUS_REJECTED and "exceeds" in ack.message
    assert (await stream.result(assignment.execution_id, result=b"x" * 10)).status == pb.ACK_STATUS_ACCEPTED
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.SUCCEEDED


async def test_log_chunks_are_stored_while_owned(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    await submit(db_pool, redis_client, "echo")
    stream = streams()
    await stream.register("w1", ["echo"])
    assignment = await stream.expect("assignment")
    eid = assignment.execution_id
    # Sent back to back: the gateway applies one execution's messages in order.
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id=eid, message="line 1", stream="stdout"))
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id=eid, message="line 2"))
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id=eid, message="nul\x00byte", stream="stderr"))
    await stream.send(result=pb.TaskResult(execution_id=eid, success=True))
    await stream.send(log_chunk=pb.TaskLogChunk(execution_id=eid, message="too late"))
    acks = [await stream.expect("ack", ack_kind="log") for _ in range(4)]
    assert [a.status for a in acks] == [pb.ACK_STATUS_ACCEPTED] * 3 + [pb.ACK_STATUS_STALE]
    rows = await db_pool.fetch(
        "SELECT stream, message FROM execution_logs WHERE execution_id = $1 ORDER BY log_id", uuid.UUID(eid)
    )
    assert [(r["stream"], r["message"]) for r in rows] == [
        ("stdout", "line 1"),
        ("log", "line 2"),
        ("stderr", "nul\ufffdbyte"),
    ]


async def test_heartbeat_renews_leases(
    streams: Streams,
    gateway_with: GatewayWith,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
) -> None:
    gateway = gateway_with(DISPATCHD_LEASE_SECONDS="5")
    stream = streams(gateway.target)
    await stream.register("w1", ["echo"])
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    await stream.expect("assignment")
    before = (await _execution(db_pool, job_id, 1))["lease_expires_at"]
    await asyncio.sleep(0.3)
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1", status=pb.WORKER_STATUS_BUSY))
    ack = await stream.expect("ack", ack_kind="heartbeat")
    assert ack.status == pb.ACK_STATUS_ACCEPTED
    after = (await _execution(db_pool, job_id, 1))["lease_expires_at"]
    assert (after - before).total_seconds() >= 0.25
    assert await db_pool.fetchval("SELECT status FROM workers WHERE worker_id = 'w1'") == pb.WORKER_STATUS_BUSY


async def test_draining_heartbeat_stops_assignments(
    streams: Streams, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = streams()
    await stream.register("w1", ["echo"])
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1", status=pb.WORKER_STATUS_DRAINING))
    await stream.expect("ack", ack_kind="heartbeat")
    await submit(db_pool, redis_client, "echo")
    await stream.nothing("assignment", 0.5)
    await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="w1", status=pb.WORKER_STATUS_READY))
    await stream.expect("assignment", 2)
