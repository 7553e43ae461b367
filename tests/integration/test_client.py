"""dispatchd.client against the control plane running as its own process (real Postgres and Redis)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import asyncpg
import pytest
import redis.asyncio

from dispatchd.client import (
    AlreadyExists,
    AsyncClient,
    Client,
    ExecutionStatus,
    InvalidArgument,
    JobNotFound,
    JobSpec,
    JobStatus,
    Retries,
    Unavailable,
)
from dispatchd.devtools.stores import free_port
from tests.support.factories import StartControlPlane
from tests.support.submissions import complete

pytestmark = pytest.mark.integration


@pytest.fixture
def target(start_control_plane: StartControlPlane) -> str:
    address = f"127.0.0.1:{free_port()}"
    start_control_plane(address)
    return address


async def test_submit_get_wait_cancel(target: str, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    async with AsyncClient(target) as client:
        run_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        request = {
            "priority": 7,
            "metadata": {"tenant": "acme"},
            "max_attempts": 4,
            "initial_backoff": dt.timedelta(milliseconds=500),
            "execution_timeout": dt.timedelta(seconds=90),
            "run_at": run_at,
        }
        later = await client.submit("reports.daily", {"day": "2025-03-01"}, **request)
        job = later.job
        assert not later.deduplicated and job.status is JobStatus.PENDING
        assert json.loads(job.payload) == {"day": "2025-03-01"} and job.metadata == {"tenant": "acme"}
        assert job.retry_policy.max_attempts == 4 and job.retry_policy.initial_backoff == dt.timedelta(seconds=0.5)
        assert job.execution_timeout == dt.timedelta(seconds=90)
        assert job.run_at is not None and abs(job.run_at - run_at) < dt.timedelta(seconds=1)
        assert job.idempotency_key  # generated once by the client
        assert await client.get(job.job_id) == job

        again = await client.submit(
            "reports.daily",
            job.payload,
            idempotency_key=job.idempotency_key,
            **request,
        )
        assert again.deduplicated and again.job.job_id == job.job_id
        with pytest.raises(AlreadyExists, match="different request"):
            await client.submit("reports.daily", b"other", idempotency_key=job.idempotency_key)

        cancelled = await client.cancel(job.job_id, reason="not needed")
        assert cancelled.status is JobStatus.CANCELED and cancelled.status.terminal
        assert (await client.wait(job.job_id)).status is JobStatus.CANCELED

        now = (await client.submit("thumbnail.render", b"img")).job
        waiting = asyncio.create_task(client.wait(now.job_id, timeout=dt.timedelta(seconds=20)))
        await complete(db_pool, redis_client, now.job_id, b'{"ok": true}')
        done = await waiting
        assert done.status is JobStatus.SUCCEEDED and done.result_json() == {"ok": True}
        assert done.finished_at is not None

        unfinished = (await client.submit("thumbnail.render", b"img")).job
        still = await client.wait(unfinished.job_id, timeout=dt.timedelta(milliseconds=200))
        assert still.status is JobStatus.PENDING and not still.status.terminal


async def test_list_pages_executions_dead_letters_and_redrive(
    target: str, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    async with AsyncClient(target) as client:
        ids = [(await client.submit("batch.item", {"n": n})).job.job_id for n in range(5)]
        first = await client.list_jobs(job_type="batch.item", page_size=2)
        assert [j.job_id for j in first.items] == ids[::-1][:2] and first.next_page_token
        assert [j.job_id async for j in client.iter_jobs(job_type="batch.item", page_size=2)] == ids[::-1]
        await client.cancel(ids[0])
        assert [j.job_id async for j in client.iter_jobs(status="cancelled")] == [ids[0]]
        assert [j.job_id async for j in client.iter_jobs(status=JobStatus.PENDING, job_type="batch.item")] == (
            ids[1:][::-1]
        )

        doomed = (await client.submit("mail.send", b"x", max_attempts=1)).job
        await complete(db_pool, redis_client, doomed.job_id, b"boom", ok=False)
        (attempt,) = await client.executions(doomed.job_id)
        assert attempt.status is ExecutionStatus.DEAD_LETTERED and attempt.attempt == 1 and attempt.worker_id == "w"

        page = await client.dead_letters(job_type="mail.send", since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        assert [d.job.job_id for d in page.items] == [doomed.job_id] and not page.next_page_token
        assert page.items[0].execution.execution_id == attempt.execution_id
        assert [d async for d in client.iter_dead_letters(until=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))] == []

        redriven = await client.redrive([doomed.job_id, ids[1]], reason="fixed")
        assert [j.job_id for j in redriven.redriven] == [doomed.job_id]
        assert [s.job_id for s in redriven.skipped] == [ids[1]]
        assert (await client.get(doomed.job_id)).status is JobStatus.PENDING
        assert (await client.redrive_matching(job_type="mail.send")).redriven == ()


async def test_errors_are_domain_exceptions(target: str) -> None:
    async with AsyncClient(target) as client:
        missing = str(uuid.uuid4())
        with pytest.raises(JobNotFound, match=missing) as found:
            await client.get(missing)
        assert found.value.code == "NOT_FOUND" and found.value.__cause__ is not None
        with pytest.raises(InvalidArgument, match="job_type"):
            await client.submit("Bad Type!")
        with pytest.raises(InvalidArgument, match="priority"):
            await client.submit("ok", priority=-1)


def test_the_sync_client_has_the_same_methods(target: str) -> None:
    with Client(target) as client:
        job = client.submit("sync.job", "text").job
        assert job.payload == b"text"
        assert client.get(job.job_id).job_id == job.job_id
        assert [j.job_id for j in client.iter_jobs(job_type="sync.job", page_size=1)] == [job.job_id]
        assert client.cancel(job.job_id).status is JobStatus.CANCELED
        with pytest.raises(JobNotFound):
            client.get(str(uuid.uuid4()))


def test_an_unreachable_control_plane_is_unavailable_after_the_retries() -> None:
    with Client(f"127.0.0.1:{free_port()}", retries=Retries(attempts=2)) as client, pytest.raises(Unavailable):
        client.get(str(uuid.uuid4()))


async def test_a_submit_retried_until_the_server_is_up_makes_one_job(
    start_control_plane: StartControlPlane, db_pool: asyncpg.Pool
) -> None:
    address = f"127.0.0.1:{free_port()}"
    retries = Retries(attempts=60, initial=dt.timedelta(milliseconds=100), maximum=dt.timedelta(milliseconds=500))
    async with AsyncClient(address, retries=retries) as client:
        submitting = asyncio.create_task(client.submit("late.start", b"x"))
        await asyncio.sleep(0.5)
        assert not submitting.done()  # nothing listens yet: the client is retrying
        await asyncio.to_thread(start_control_plane, address)
        job = (await submitting).job
    count = await db_pool.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", job.idempotency_key)
    assert job.idempotency_key and count == 1


async def test_submit_many_answers_each_job_in_order(target: str, db_pool: asyncpg.Pool) -> None:
    async with AsyncClient(target) as client:
        jobs: list[JobSpec] = [
            {"job_type": "many.a", "payload": {"n": 1}, "idempotency_key": "m1"},
            {"job_type": "Bad Type"},
            {"job_type": "many.b", "delay": dt.timedelta(seconds=30), "metadata": {"k": "v"}},
        ]
        first = await client.submit_many(jobs, chunk_size=2)
        assert [o.ok for o in first] == [True, False, True]
        assert isinstance(first[1].error, InvalidArgument) and "job_type" in first[1].error.details
        assert first[0].status is JobStatus.PENDING and not first[0].deduplicated
        again = await client.submit_many([jobs[0], {**jobs[0], "payload": "other"}])
        assert (again[0].job_id, again[0].deduplicated) == (first[0].job_id, True)
        assert isinstance(again[1].error, AlreadyExists)
    assert await db_pool.fetchval("SELECT count(*) FROM jobs") == 2


def test_the_sync_client_submits_many(target: str) -> None:
    with Client(target) as sync_client:
        (outcome,) = sync_client.submit_many([{"job_type": "many.sync"}])
        assert outcome.ok and sync_client.get(outcome.job_id).job_type == "many.sync"
