"""A passive region, with every service as its own process against real Postgres and Redis.

The control plane serves reads and refuses mutations with FAILED_PRECONDITION naming the
primary region; the gateway refuses worker streams; the scheduler never takes the lease; and
a region that allows mutations without being the primary refuses to start.
"""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.platform.queues import Keys
from dispatchd.sdk import Worker
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.processes import Spawner
from tests.support.streams import WorkerStream
from tests.support.submissions import submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSIVE = {
    "DISPATCHD_REGION": "region-b",
    "DISPATCHD_PRIMARY_REGION": "region-a",
    "DISPATCHD_ALLOW_MUTATIONS": "false",
    "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
    "DISPATCHD_LOG_JSON": "false",
}
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def start(spawn: Spawner, kind: str, env: dict[str, str]) -> tuple[ServiceProcess, str]:
    process = spawn.service(kind, env)
    return process, process.address


def assert_refused(caught: pytest.ExceptionInfo[grpc.RpcError], method: str) -> None:
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details() or ""
    assert "region 'region-b' is passive" in details
    assert "region-a" in details and method in details


async def test_passive_control_plane_serves_reads_and_refuses_mutations(
    database_url: str, redis_url: str, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis, spawn_service: Spawner
) -> None:
    job_id = str((await submit(db_pool, redis_client, "email.send", b"replicated")).job.job_id)
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **PASSIVE}
    process, target = start(spawn_service, "control-plane", env)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        got = await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=5)
        assert got.job.payload == b"replicated"
        listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest(), timeout=5)
        assert [j.job_id for j in listed.jobs] == [job_id]
        executions = await jobs.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job_id), timeout=5)
        assert len(executions.executions) == 1

        with pytest.raises(grpc.RpcError) as caught:
            await jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="email.send"), timeout=5)
        assert_refused(caught, "SubmitJob")
        with pytest.raises(grpc.RpcError) as caught:
            batch = job_service_pb2.BatchSubmitJobsRequest(
                jobs=[job_service_pb2.SubmitJobRequest(job_type="email.send")]
            )
            await jobs.BatchSubmitJobs(batch, timeout=5)
        assert_refused(caught, "BatchSubmitJobs")
        with pytest.raises(grpc.RpcError) as caught:
            await jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id), timeout=5)
        assert_refused(caught, "CancelJob")
        redrive = getattr(jobs, "RedriveJobs", None)
        if redrive is not None:  # the redrive RPC is part of the contract from issue 3 on
            with pytest.raises(grpc.RpcError) as caught:
                await redrive(job_service_pb2.RedriveJobsRequest(job_ids=[job_id]), timeout=5)
            assert_refused(caught, "RedriveJobs")

    # Nothing changed: no new job, the existing one untouched.
    assert await db_pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM executions") == 1
    assert process.terminate(timeout=15) == 0


async def test_passive_gateway_refuses_worker_streams(
    database_url: str, redis_url: str, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis, spawn_service: Spawner
) -> None:
    await submit(db_pool, redis_client, "email.send")
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **PASSIVE}
    process, target = start(spawn_service, "worker-gateway", env)
    stream = WorkerStream(target)
    try:
        await stream.offer("w-1", ["email"], max_concurrency=1)
        with pytest.raises(grpc.RpcError) as caught:
            message = await stream.read(5)
            pytest.fail(f"a passive gateway sent something on a worker stream: {message}")
        assert_refused(caught, "Connect")
    finally:
        await stream.close()

    assert await db_pool.fetchval("SELECT count(*) FROM workers") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM executions WHERE status <> 1") == 0  # all still QUEUED
    assert process.terminate(timeout=15) == 0


async def test_passive_scheduler_never_leads(
    database_url: str, redis_url: str, redis_client: redis.asyncio.Redis, spawn_service: Spawner
) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DISPATCHD_LEADER_TTL_SECONDS": "0.5", **PASSIVE}
    process, _ = start(spawn_service, "scheduler", env)
    await asyncio.sleep(1.5)  # three lease TTLs: an active scheduler would have led long ago
    assert await redis_client.get(Keys("dispatchd").leader) is None
    assert "will not campaign for leadership" in process.log_tail()
    assert process.terminate(timeout=15) == 0


def test_a_non_primary_region_allowing_mutations_refuses_to_start(
    database_url: str, redis_url: str, spawn_service: Spawner
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        **PASSIVE,
        "DISPATCHD_ALLOW_MUTATIONS": "true",
    }
    process = spawn_service.service("control-plane", env, wait=False)
    assert process.wait(timeout=30) != 0
    assert "only the primary may allow mutations" in process.log_tail()


async def test_an_sdk_worker_keeps_retrying_a_passive_gateway(
    database_url: str, redis_url: str, spawn_service: Spawner
) -> None:
    # A passive region's gateway refuses streams with FAILED_PRECONDITION until the region is
    # promoted: a worker started (or reconnecting) during a failover must not give up on it.
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **PASSIVE}
    process, target = start(spawn_service, "worker-gateway", env)
    worker = Worker(target, worker_id="w-passive", reconnect_initial_seconds=0.1)
    worker.handler("email.send")(_never_called)
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(2)  # several refused attempts
        assert not running.done(), running.exception() if running.done() else None
        assert not worker.registered.is_set()
    finally:
        worker.request_stop(grace=0)
        await asyncio.wait_for(running, 10)
    assert process.terminate(timeout=15) == 0


async def _never_called(task: object) -> None:
    raise AssertionError("a passive gateway assigned work")
