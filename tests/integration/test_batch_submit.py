"""BatchSubmitJobs and the group commit of SubmitJob, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.control_plane.servicer import JobService
from dispatchd.control_plane.submits import Submitter
from dispatchd.control_plane.waiters import JobWaiters
from dispatchd.platform.config import Settings
from dispatchd.platform.db import create_pool
from dispatchd.platform.errors import AlreadyExists, InvalidArgument
from dispatchd.platform.paging import PageTokens
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store.submits import NewJob, Submitted
from dispatchd.v1 import common_pb2, job_service_pb2
from tests.integration import test_control_plane
from tests.integration.test_control_plane import Harness, expect_error
from tests.support.submissions import complete

pytestmark = pytest.mark.integration

# The in-process JobService of the control-plane tests.
serve_on = test_control_plane.serve_on
cp = test_control_plane.cp

OK, INVALID_ARGUMENT, ALREADY_EXISTS = 0, 3, 6


def _job(job_type: str = "email.send", **fields: object) -> job_service_pb2.SubmitJobRequest:
    return job_service_pb2.SubmitJobRequest(job_type=job_type, **fields)  # type: ignore[arg-type]


async def _batch(cp: Harness, *jobs: job_service_pb2.SubmitJobRequest) -> list[job_service_pb2.BatchSubmitJobResult]:
    reply = await cp.stub.BatchSubmitJobs(job_service_pb2.BatchSubmitJobsRequest(jobs=jobs))
    return list(reply.results)


async def test_a_batch_is_stored_pending_and_queued(cp: Harness, redis_client: redis.asyncio.Redis) -> None:
    results = await _batch(cp, *(_job(payload=f"p{i}".encode(), metadata={"n": str(i)}) for i in range(5)))
    assert [(r.code, r.error_message, r.deduplicated) for r in results] == [(OK, "", False)] * 5
    assert {r.status for r in results} == {common_pb2.JOB_STATUS_PENDING}
    for i, result in enumerate(results):
        job = await cp.pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", uuid.UUID(result.job_id))
        assert (job["payload"], job["metadata"]) == (f"p{i}".encode(), {"n": str(i)})
        (execution_id,) = await cp.execution_ids(result.job_id)
        assert await redis_client.zscore(cp.queues.keys.ready("email.send"), str(execution_id)) is not None
    # A worker runs each of them.
    for result in results:
        await complete(cp.pool, redis_client, result.job_id, b"done")
    statuses = await cp.pool.fetch("SELECT status FROM jobs")
    assert {r["status"] for r in statuses} == {common_pb2.JOB_STATUS_SUCCEEDED}


async def test_an_invalid_job_is_refused_alone(cp: Harness) -> None:
    results = await _batch(cp, _job(payload=b"a"), _job("Not A Type"), _job(priority=-1), _job(payload=b"b"))
    assert [r.code for r in results] == [OK, INVALID_ARGUMENT, INVALID_ARGUMENT, OK]
    assert "job_type" in results[1].error_message and "priority" in results[2].error_message
    assert results[1].job_id == "" and results[1].status == common_pb2.JOB_STATUS_UNSPECIFIED
    assert await cp.count_jobs() == 2


async def test_idempotency_per_job(cp: Harness) -> None:
    first = await _batch(cp, _job(idempotency_key="k1", payload=b"a"), _job(idempotency_key="k2", payload=b"b"))
    again = await _batch(
        cp,
        _job(idempotency_key="k1", payload=b"a"),  # the same request: the same job back
        _job(idempotency_key="k2", payload=b"changed"),  # another request under a used key
        _job(idempotency_key="k3", payload=b"c"),
    )
    assert [(r.code, r.deduplicated) for r in again] == [(OK, True), (ALREADY_EXISTS, False), (OK, False)]
    assert again[0].job_id == first[0].job_id
    assert first[1].job_id in again[1].error_message and again[1].job_id == ""
    assert await cp.count_jobs() == 3


async def test_a_key_twice_in_one_batch_behaves_as_two_submits(cp: Harness) -> None:
    results = await _batch(
        cp,
        _job(idempotency_key="twice", payload=b"a"),
        _job(idempotency_key="twice", payload=b"a"),
        _job(idempotency_key="twice", payload=b"b"),
        _job(payload=b"no key"),
    )
    expected = [(OK, False), (OK, True), (ALREADY_EXISTS, False), (OK, False)]
    assert [(r.code, r.deduplicated) for r in results] == expected
    assert results[1].job_id == results[0].job_id
    assert await cp.count_jobs() == 2


async def test_an_empty_or_oversized_batch_is_refused(cp: Harness) -> None:
    empty = job_service_pb2.BatchSubmitJobsRequest()
    await expect_error(cp.stub.BatchSubmitJobs(empty), grpc.StatusCode.INVALID_ARGUMENT, "jobs")
    limit = cp.settings.max_batch_submit
    too_many = job_service_pb2.BatchSubmitJobsRequest(jobs=[_job() for _ in range(limit + 1)])
    await expect_error(cp.stub.BatchSubmitJobs(too_many), grpc.StatusCode.INVALID_ARGUMENT, str(limit))
    assert await cp.count_jobs() == 0


def _service(pool: asyncpg.Pool, client: redis.asyncio.Redis) -> JobService:
    settings = Settings()
    queues = ReadyQueues(client, settings.redis_prefix)
    return JobService(settings, pool, queues, JobWaiters(client, queues.keys.job_channel), PageTokens.from_key_file(""))


async def test_concurrent_submits_share_transactions(db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    service = _service(db_pool, redis_client)
    await service.SubmitJob(_job(idempotency_key="taken", payload=b"x"), None)  # type: ignore[arg-type]
    before = service.submitter.transactions
    calls = [_job(payload=f"{i}".encode()) for i in range(40)] + [_job(idempotency_key="taken", payload=b"y")]
    answers = await asyncio.gather(
        *(service.SubmitJob(call, None) for call in calls),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert service.submitter.transactions - before < len(calls)
    assert isinstance(answers[-1], AlreadyExists)
    fresh = [a for a in answers[:-1] if isinstance(a, job_service_pb2.SubmitJobResponse)]
    assert [a.job.payload for a in fresh] == [c.payload for c in calls[:-1]]
    assert len({a.job.job_id for a in fresh}) == 40
    assert await db_pool.fetchval("SELECT count(*) FROM executions") == 41


def _new(payload: bytes, metadata: dict[str, str] | None = None) -> NewJob:
    return NewJob("email.send", payload, 0, None, metadata or {}, RetryPolicy(), False)


async def test_a_row_postgres_refuses_fails_only_its_own_job(
    db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    submitter = Submitter(db_pool, ReadyQueues(redis_client, Settings().redis_prefix))
    # jsonb cannot hold U+0000: a DataError from Postgres, past any validation.
    bad = _new(b"bad", {"k": "a\x00b"})
    alone, together = await asyncio.gather(
        submitter.submit([_new(b"alone")]), submitter.submit([_new(b"one"), bad, _new(b"two")])
    )
    assert isinstance(alone[0], Submitted)
    assert isinstance(together[0], Submitted) and isinstance(together[2], Submitted)
    assert isinstance(together[1], InvalidArgument)
    payloads = {r["payload"] for r in await db_pool.fetch("SELECT payload FROM jobs")}
    assert payloads == {b"alone", b"one", b"two"}


async def test_a_failed_transaction_fails_every_waiting_caller(
    database_url: str, redis_client: redis.asyncio.Redis
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    submitter = Submitter(pool, ReadyQueues(redis_client, Settings().redis_prefix))
    await pool.close()
    answers = await asyncio.wait_for(
        asyncio.gather(*(submitter.submit([_new(b"x")]) for _ in range(5)), return_exceptions=True), timeout=10
    )
    assert all(isinstance(a, asyncpg.InterfaceError) for a in answers), answers
