"""Ownership on the worker stream: claim tokens, heartbeat lists, stale results, restarts.

The gateway runs as its own process; raw Connect streams play the workers, including
reference clients that send neither claim tokens nor heartbeat lists.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import jobs
from dispatchd.v1 import worker_service_pb2 as pb
from tests.support.factories import Streams
from tests.support.gateway import Gateway
from tests.support.polling import eventually
from tests.support.streams import WorkerStream
from tests.support.submissions import PREFIX, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HEARTBEAT_SECONDS = 0.4


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"DISPATCHD_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)}


async def execution(pool: asyncpg.Pool, execution_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM executions WHERE execution_id = $1", uuid.UUID(execution_id))
    assert row is not None
    return row


async def heartbeat(stream: WorkerStream, worker_id: str, running: list[str] | None) -> pb.WorkerAck:
    beat = pb.WorkerHeartbeat(worker_id=worker_id, status=pb.WORKER_STATUS_BUSY)
    if running is not None:
        beat.running_execution_ids.extend(running)
        beat.lists_running = True
    await stream.send(heartbeat=beat)
    ack: pb.WorkerAck = await stream.expect("ack", ack_kind="heartbeat")
    return ack


async def result(stream: WorkerStream, execution_id: str, token: str = "", success: bool = True) -> pb.WorkerAck:
    await stream.send(result=pb.TaskResult(execution_id=execution_id, success=success, claim_token=token))
    ack: pb.WorkerAck = await stream.expect("ack", ack_kind="result")
    return ack


Worker = Callable[[int], Awaitable[WorkerStream]]


@pytest.fixture
def worker(streams: Streams, gateway: Gateway) -> Worker:
    """worker(slots): a new raw stream registered as worker w1 for `echo` jobs."""

    async def register(max_concurrency: int) -> WorkerStream:
        stream = streams(gateway.target)
        await stream.register("w1", ["echo"], max_concurrency=max_concurrency)
        return stream

    return register


async def assign_one(
    stream: WorkerStream, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> tuple[uuid.UUID, pb.TaskAssignment]:
    """Submit an echo job; its id and the assignment the (otherwise idle) stream gets for it."""
    job_id = (await submit(db_pool, redis_client, "echo")).job.job_id
    assignment: pb.TaskAssignment = await stream.expect("assignment")
    return job_id, assignment


# --------------------------------------------------------------------------- claim tokens


async def test_results_carrying_a_claim_token_must_match_the_claim(
    worker: Worker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = await worker(2)
    job_id, assignment = await assign_one(stream, db_pool, redis_client)
    row = await execution(db_pool, assignment.execution_id)
    assert assignment.claim_token == str(row["claim_token"])
    assert not assignment.HasField("execution_timeout")

    assert (await result(stream, assignment.execution_id, "not-a-uuid")).status == pb.ACK_STATUS_REJECTED
    stale = await result(stream, assignment.execution_id, str(uuid.uuid4()))
    assert stale.status == pb.ACK_STATUS_STALE and "claim" in stale.message
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.DISPATCHING
    assert (await result(stream, assignment.execution_id, assignment.claim_token)).status == pb.ACK_STATUS_ACCEPTED
    duplicate = await result(stream, assignment.execution_id, assignment.claim_token)
    assert duplicate.status == pb.ACK_STATUS_STALE
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.SUCCEEDED
    # The stream stays open and keeps working after stale and rejected results.
    await submit(db_pool, redis_client, "echo")
    again = await stream.expect("assignment")
    assert (await result(stream, again.execution_id)).status == pb.ACK_STATUS_ACCEPTED  # no token: reference


async def test_a_result_for_a_cancelled_job_never_changes_it(
    worker: Worker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = await worker(1)
    job_id, assignment = await assign_one(stream, db_pool, redis_client)
    await stream.send(started=pb.TaskStarted(execution_id=assignment.execution_id))
    await stream.expect("ack", ack_kind="started")
    cancelled = await jobs.cancel(db_pool, job_id, "operator")
    for execution_id, worker_id in cancelled.stopped:
        await ReadyQueues(redis_client, PREFIX).publish_cancel(str(execution_id), worker_id, "operator")
    cancel = await stream.expect("cancel")
    assert cancel.execution_id == assignment.execution_id
    # The worker finished anyway, successfully; then it tries a failure too.
    ack = await result(stream, assignment.execution_id, assignment.claim_token)
    assert ack.status == pb.ACK_STATUS_STALE
    assert (await result(stream, assignment.execution_id, success=False)).status == pb.ACK_STATUS_STALE
    job = await jobs.get(db_pool, job_id)
    assert (job.status, job.result, job.attempts) == (JobStatus.CANCELED, None, 1)
    rows = await db_pool.fetch("SELECT status FROM executions WHERE job_id = $1", job_id)
    assert [r["status"] for r in rows] == [ExecutionStatus.CANCELED]
    # Its slot is free again: the next job is assigned.
    await submit(db_pool, redis_client, "echo")
    await stream.expect("assignment")


# --------------------------------------------------------------------------- heartbeat lists


async def test_heartbeat_without_a_list_renews_everything_the_stream_owns(
    worker: Worker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = await worker(3)
    for _ in range(3):
        await submit(db_pool, redis_client, "echo")
    assigned = await stream.assignments(3)
    for _ in range(3):  # several intervals: a reference client never loses its work
        ack = await heartbeat(stream, "w1", None)
        assert ack.message == "renewed 3 lease(s)"
        await asyncio.sleep(HEARTBEAT_SECONDS)
    for a in assigned:
        assert ExecutionStatus((await execution(db_pool, a.execution_id))["status"]) is ExecutionStatus.CLAIMED


async def test_heartbeat_list_renews_listed_releases_forgotten_and_cancels_foreign(
    worker: Worker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = await worker(2)
    kept_job = (await submit(db_pool, redis_client, "echo")).job.job_id
    kept = await stream.expect("assignment")
    await submit(db_pool, redis_client, "echo")
    forgotten = await stream.expect("assignment")
    if kept.job_id != str(kept_job):
        kept, forgotten = forgotten, kept
    foreign = str(uuid.uuid4())
    before = await execution(db_pool, kept.execution_id)

    # First heartbeat without `forgotten`: it may still be on its way, so it is kept.
    ack = await heartbeat(stream, "w1", [kept.execution_id, foreign, "junk"])
    assert ack.status == pb.ACK_STATUS_ACCEPTED
    assert "renewed 1 lease(s)" in ack.message and "1 malformed" in ack.message
    cancel = await stream.expect("cancel")
    assert cancel.execution_id == foreign and "no longer assigned" in cancel.reason
    assert (await execution(db_pool, kept.execution_id))["lease_expires_at"] > before["lease_expires_at"]
    assert ExecutionStatus((await execution(db_pool, forgotten.execution_id))["status"]) is ExecutionStatus.CLAIMED

    # Still missing a heartbeat interval later: released and retried at once.
    await asyncio.sleep(HEARTBEAT_SECONDS)
    ack = await heartbeat(stream, "w1", [kept.execution_id])
    assert "released 1 execution(s)" in ack.message
    gone = await execution(db_pool, forgotten.execution_id)
    assert ExecutionStatus(gone["status"]) is ExecutionStatus.FAILED
    assert gone["error_message"] == "worker no longer reports running the execution"
    retry = await db_pool.fetchrow(
        "SELECT * FROM executions WHERE job_id = $1 AND attempt = 2", uuid.UUID(forgotten.job_id)
    )
    # No backoff: the worker did not fail it, it lost it.
    assert retry is not None and (retry["available_at"] - gone["finished_at"]).total_seconds() < 0.05
    # The slot was freed and the retry comes straight back to this (only) worker.
    reassigned = await stream.expect("assignment")
    assert (reassigned.job_id, reassigned.attempt) == (forgotten.job_id, 2)
    assert (await result(stream, forgotten.execution_id, forgotten.claim_token)).status == pb.ACK_STATUS_STALE
    assert (await result(stream, kept.execution_id, kept.claim_token)).status == pb.ACK_STATUS_ACCEPTED


async def test_listing_an_execution_it_lost_gets_the_worker_a_cancel(
    worker: Worker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    stream = await worker(1)
    job_id, assignment = await assign_one(stream, db_pool, redis_client)
    # Its lease expired and the scheduler failed it (a GC pause on the worker, say).
    await db_pool.execute(
        "UPDATE executions SET status = 5, error_message = 'lease expired' WHERE execution_id = $1",
        uuid.UUID(assignment.execution_id),
    )
    await heartbeat(stream, "w1", [assignment.execution_id])
    cancel = await stream.expect("cancel")
    assert cancel.execution_id == assignment.execution_id
    # The worker still runs it, so the slot stays taken until it lets go.
    await submit(db_pool, redis_client, "echo")
    await stream.nothing("assignment", 0.3)
    await heartbeat(stream, "w1", [])
    await stream.expect("assignment")
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.DISPATCHING


# --------------------------------------------------------------------------- restarts under the same id


async def test_a_worker_restarted_under_the_same_id_does_not_keep_old_claims(
    gateway: Gateway, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    # The old process is gone but its stream looks alive to the gateway (half-open TCP).
    old = WorkerStream(gateway.target)
    new = WorkerStream(gateway.target)
    try:
        await old.register("w1", ["echo"], max_concurrency=1)
        job_id, first = await assign_one(old, db_pool, redis_client)
        await new.register("w1", ["echo"], max_concurrency=1)
        retried = await new.expect("assignment")
        assert (retried.job_id, retried.attempt) == (str(job_id), 2)
        lost = await execution(db_pool, first.execution_id)
        assert (ExecutionStatus(lost["status"]), lost["error_message"]) == (
            ExecutionStatus.FAILED,
            "worker re-registered",
        )
        assert (await old.ended()).name == "ABORTED"
        # The restarted worker cannot complete the old attempt, even with its token.
        assert (await result(new, first.execution_id, first.claim_token)).status == pb.ACK_STATUS_STALE
        assert (await result(new, retried.execution_id, retried.claim_token)).status == pb.ACK_STATUS_ACCEPTED
        job = await jobs.get(db_pool, job_id)
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    finally:
        await old.close()
        await new.close()


async def test_late_results_after_a_stream_ends_are_stale_on_the_next_stream(
    worker: Worker, gateway: Gateway, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    first = WorkerStream(gateway.target)
    await first.register("w1", ["echo"], max_concurrency=1)
    job_id, assignment = await assign_one(first, db_pool, redis_client)
    await first.close()  # the stream drops: its execution is released at once

    async def released() -> bool:
        return int(await db_pool.fetchval("SELECT count(*) FROM executions WHERE job_id = $1", job_id)) == 2

    await eventually(released, 5)
    second = await worker(1)
    retry = await second.expect("assignment")
    late = await result(second, assignment.execution_id, assignment.claim_token)
    assert late.status == pb.ACK_STATUS_STALE
    assert (await result(second, retry.execution_id, retry.claim_token)).status == pb.ACK_STATUS_ACCEPTED
