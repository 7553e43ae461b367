"""Two regions cannot both write: the database, not the configuration, says who is primary.

Region B's services are given the most permissive configuration (active, naming themselves
the primary) on purpose: only the region fence (dispatchd.platform.primacy) stands between
them and a write. Region A is a private primary, region B a real streaming replica of it
(pg_basebackup -R), services are separate processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from dispatchd.devtools.stores import PostgresInstance, ReplicaInstance
from dispatchd.devtools.stores.replica import wait_streaming
from dispatchd.platform.db import create_pool
from dispatchd.platform.migrate import upgrade
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.processes import Spawner
from tests.support.streams import CHANNEL_OPTIONS, WorkerStream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def active(region: str, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_REGION": region,
        "DISPATCHD_PRIMARY_REGION": region,
        "DISPATCHD_ALLOW_MUTATIONS": "true",
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "1",
        "DISPATCHD_LOG_JSON": "false",
    }


@pytest.fixture
def region_pair(tmp_path: Path) -> Iterator[tuple[PostgresInstance, ReplicaInstance]]:
    """Region A's primary (recording region-a as the primary) and region B's streaming replica of it."""
    primary = PostgresInstance(tmp_path / "a", fast=True)
    replica = ReplicaInstance(tmp_path / "b", primary, "region-b", fast=True)
    try:
        primary.start()
        upgrade(primary.url)
        primary.psql("SELECT dispatchd_promote_region('region-a')", "dispatchd")
        replica.start()
        wait_streaming(primary, "region-b")
        yield primary, replica
    finally:
        replica.destroy()
        primary.destroy()


@dataclass(frozen=True)
class Outcome:
    """One SubmitJob: the job id when accepted, else the status and details it was refused with."""

    job_id: str | None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""


async def submit(target: str) -> Outcome:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        try:
            reply = await jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.echo"), timeout=5)
        except grpc.RpcError as exc:
            return Outcome(None, exc.code(), exc.details() or "")
        return Outcome(str(reply.job.job_id))


async def refused(target: str, primary: str) -> None:
    outcome = await submit(target)
    assert outcome.code == grpc.StatusCode.FAILED_PRECONDITION, outcome
    assert repr(primary) in outcome.details, outcome


async def until_outcome(target: str, seconds: float, wanted: Callable[[Outcome], bool]) -> Outcome:
    deadline = time.monotonic() + seconds
    while not wanted(outcome := await submit(target)):
        assert time.monotonic() < deadline, f"not what was wanted after {seconds}s: {outcome}"
        await asyncio.sleep(0.1)
    return outcome


async def accepted_within(target: str, seconds: float) -> str:
    outcome = await until_outcome(target, seconds, lambda o: o.job_id is not None)
    assert outcome.job_id is not None
    return outcome.job_id


async def test_a_region_on_a_replica_never_writes_and_writes_only_once_its_promotion_is_recorded(
    region_pair: tuple[PostgresInstance, ReplicaInstance], redis_url: str, spawn_service: Spawner
) -> None:
    primary, replica = region_pair
    a = spawn_service.service("control-plane", active("region-a", primary.url, redis_url)).address
    job_id = await accepted_within(a, 5)
    b_env = active("region-b", replica.url, redis_url)
    b = spawn_service.service("control-plane", b_env).address
    gateway = spawn_service.service("worker-gateway", b_env).address

    # On the replica: reads are served, every write refused naming region A, worker streams too.
    async with grpc.aio.insecure_channel(b, options=CHANNEL_OPTIONS) as channel:
        got = await job_service_pb2_grpc.JobServiceStub(channel).GetJob(
            job_service_pb2.GetJobRequest(job_id=job_id), timeout=5
        )
        assert got.job.job_id == job_id
    for _ in range(3):  # across refreshes of the fence, not just its first answer
        await refused(b, "region-a")
        await asyncio.sleep(0.6)
    stream = WorkerStream(gateway)
    try:
        await stream.offer("w-b", ["builtin"], max_concurrency=1)
        with pytest.raises(grpc.RpcError) as caught:
            await stream.read(5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await stream.close()

    # Promoted (pg_promote) but not recorded: the database still names region A. Still refused.
    primary.kill()
    replica.promote()
    await asyncio.sleep(1.5)
    await refused(b, "region-a")

    # The promotion is recorded in B's database: B writes, without a restart.
    assert replica.psql("SELECT dispatchd_promote_region('region-b')", "dispatchd") == "2"
    await accepted_within(b, 3)


async def test_the_old_primary_refuses_writes_once_rebuilt_as_a_replica_of_the_new_one(
    region_pair: tuple[PostgresInstance, ReplicaInstance], redis_url: str, spawn_service: Spawner
) -> None:
    primary, replica = region_pair
    a_env = active("region-a", primary.url, redis_url)
    a = spawn_service.service("control-plane", a_env).address
    scheduler = spawn_service.service("scheduler", a_env)
    await accepted_within(a, 5)

    # Region B takes over; region A's database is thrown away and copied back from B,
    # on A's port: A's running services (still configured active) reconnect to it.
    primary.stop()
    replica.promote()
    replica.psql("SELECT dispatchd_promote_region('region-b')", "dispatchd")
    rebuilt = ReplicaInstance(primary.requested_data_dir, replica, "region-a", port=primary.port, fast=True)
    try:
        rebuilt.rebuild()
        await until_outcome(a, 10, lambda o: "'region-b'" in o.details)
        await refused(a, "region-b")
        await asyncio.sleep(1)
        assert "region fence closed" in scheduler.log_tail(200)
    finally:
        rebuilt.destroy()


async def test_a_primary_whose_database_records_another_region_refuses_writes(
    database_url: str, redis_url: str, spawn_service: Spawner
) -> None:
    a = spawn_service.service("control-plane", active("region-a", database_url, redis_url)).address
    await accepted_within(a, 5)  # a fresh database: claimed by the first active region
    # Region B's promotion recorded in A's own database (as if A had been rebuilt from B).
    pool = await create_pool(database_url, 1, 1)
    try:
        assert await pool.fetchval("SELECT dispatchd_promote_region('region-b')") == 2
    finally:
        await pool.close()
    await until_outcome(a, 3, lambda o: o.job_id is None)
    await refused(a, "region-b")
