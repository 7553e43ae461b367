"""JobService against real Postgres and Redis, served in-process on a grpc.aio server."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
import pytest_asyncio
import redis.asyncio
from google.protobuf import duration_pb2

from dispatchd.control_plane.servicer import JobService
from dispatchd.control_plane.waiters import JobWaiters
from dispatchd.devtools.stores import RedisInstance
from dispatchd.platform.config import Settings
from dispatchd.platform.interceptors import ErrorInterceptor
from dispatchd.platform.paging import PageTokens
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.server import MAX_MESSAGE_BYTES
from dispatchd.platform.store import executions
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support import settling

pytestmark = pytest.mark.integration

JobStatus = common_pb2.JobStatus
ExecutionStatus = common_pb2.ExecutionStatus


@dataclass
class Harness:
    stub: job_service_pb2_grpc.JobServiceAsyncStub
    pool: asyncpg.Pool
    queues: ReadyQueues
    waiters: JobWaiters
    settings: Settings

    async def submit(self, job_type: str = "email.send", **fields: object) -> common_pb2.Job:
        reply = await self.stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type=job_type, **fields))  # type: ignore[arg-type]
        return reply.job

    async def count_jobs(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM jobs"))

    async def execution_ids(self, job_id: str) -> list[uuid.UUID]:
        rows = await self.pool.fetch("SELECT execution_id FROM executions WHERE job_id = $1 ORDER BY attempt", job_id)
        return [r["execution_id"] for r in rows]


Serve = Callable[[asyncpg.Pool, redis.asyncio.Redis], Awaitable[Harness]]


@pytest_asyncio.fixture
async def serve_on(db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> AsyncIterator[Serve]:
    """Factory: serve a JobService on (pool, redis client); everything stops at teardown.

    It takes the test's pool and client as fixtures only so that it is torn down before them:
    the servers stop while the stores they use are still open.
    """
    cleanups: list[tuple[grpc.aio.Server, asyncio.Task[None], grpc.aio.Channel]] = []

    async def start(pool: asyncpg.Pool, client: redis.asyncio.Redis) -> Harness:
        settings = Settings()
        queues = ReadyQueues(client, settings.redis_prefix)
        waiters = JobWaiters(client, queues.keys.job_channel, min_backoff_seconds=0.05, max_backoff_seconds=0.5)
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        job_service_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(settings, pool, queues, waiters, PageTokens.from_key_file("")), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        listener = asyncio.create_task(waiters.run())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
        cleanups.append((server, listener, channel))
        # Subscribed before the test runs, so WaitJob tests exercise the push path.
        for _ in range(200):
            if waiters.subscribed:
                break
            await asyncio.sleep(0.01)
        return Harness(job_service_pb2_grpc.JobServiceStub(channel), pool, queues, waiters, settings)

    yield start
    for server, listener, channel in cleanups:
        await channel.close(None)
        await server.stop(0)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


@pytest_asyncio.fixture
async def cp(serve_on: Serve, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> Harness:
    harness = await serve_on(db_pool, redis_client)
    assert harness.waiters.subscribed
    return harness


async def expect_error(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details


# --------------------------------------------------------------------------- submit / get


async def test_submit_and_get_round_trip(cp: Harness) -> None:
    reply = await cp.stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job_type="email.send",
            payload=b"\x00\xffbinary",
            priority=7,
            metadata={"tenant": "acme", "trace": "t-1"},
            retry_policy=common_pb2.RetryPolicy(
                max_attempts=5,
                initial_backoff=duration_pb2.Duration(seconds=1, nanos=500_000_000),
                max_backoff=duration_pb2.Duration(seconds=30),
            ),
        )
    )
    assert not reply.deduplicated
    job = reply.job
    uuid.UUID(job.job_id)
    assert job.status == JobStatus.JOB_STATUS_PENDING
    assert job.attempts == 1
    assert job.retry_policy.initial_backoff.ToMilliseconds() == 1500
    assert job.retry_policy.max_backoff.seconds == 30
    assert job.HasField("created_at") and not job.HasField("finished_at")

    got = (await cp.stub.GetJob(job_service_pb2.GetJobRequest(job_id=job.job_id))).job
    assert got == job
    assert got.payload == b"\x00\xffbinary"
    assert dict(got.metadata) == {"tenant": "acme", "trace": "t-1"}
    assert got.priority == 7 and got.retry_policy.max_attempts == 5

    # The first attempt is on its ready queue already.
    (execution_id,) = await cp.execution_ids(job.job_id)
    ref = QueuedRef(execution_id, "email.send", 7, got.created_at.ToDatetime())
    assert await cp.queues.contains(ref)


async def test_unset_retry_policy_reports_the_defaults(cp: Harness) -> None:
    job = await cp.submit()
    assert job.retry_policy.max_attempts == 3
    assert job.retry_policy.initial_backoff.seconds == 5
    assert job.retry_policy.max_backoff.seconds == 60
    assert await cp.pool.fetchval("SELECT retry_policy_set FROM jobs") is False


async def test_idempotent_resubmit_returns_the_same_job(cp: Harness) -> None:
    request = job_service_pb2.SubmitJobRequest(job_type="report.daily", payload=b"x", idempotency_key="k-1")
    first = await cp.stub.SubmitJob(request)
    second = await cp.stub.SubmitJob(request)
    assert not first.deduplicated and second.deduplicated
    assert second.job.job_id == first.job.job_id
    assert second.job.idempotency_key == "k-1"
    assert await cp.count_jobs() == 1

    other = job_service_pb2.SubmitJobRequest(job_type="report.daily", payload=b"y", idempotency_key="k-1")
    await expect_error(cp.stub.SubmitJob(other), grpc.StatusCode.ALREADY_EXISTS, "k-1", first.job.job_id)
    assert await cp.count_jobs() == 1


BAD_SUBMITS = [
    pytest.param({"job_type": ""}, "job_type is required", id="empty-type"),
    pytest.param({"job_type": "Email Send!"}, "job_type 'Email Send!' is not a valid job type", id="bad-type-chars"),
    pytest.param({"job_type": "a" * 129}, "at most 128 characters", id="long-type"),
    pytest.param({"priority": -1}, "priority must be between 0 and 1000", id="negative-priority"),
    pytest.param({"priority": 1001}, "priority must be between 0 and 1000", id="huge-priority"),
    pytest.param({"payload": b"x" * (2 * 1024 * 1024)}, "payload is 2097152 bytes; the limit is 1048576", id="payload"),
    pytest.param({"metadata": {f"k{i}": "v" for i in range(65)}}, "metadata has 65 entries; at most 64", id="meta-n"),
    pytest.param({"metadata": {"": "v"}}, "metadata keys must be 1 to 256", id="meta-empty-key"),
    pytest.param({"metadata": {"k" * 257: "v"}}, "metadata keys must be 1 to 256", id="meta-long-key"),
    pytest.param({"metadata": {"k": "v" * 4097}}, "at most 4096", id="meta-long-value"),
    pytest.param({"metadata": {"k": "a\x00b"}}, "must not contain NUL", id="meta-nul"),
    pytest.param({"idempotency_key": "k" * 257}, "idempotency_key is 257 characters", id="long-key"),
    pytest.param({"idempotency_key": "a\x00"}, "idempotency_key 'a\\x00' must not contain control", id="nul-key"),
    pytest.param(
        {"retry_policy": common_pb2.RetryPolicy(initial_backoff=duration_pb2.Duration(seconds=-1))},
        "retry_policy.initial_backoff must not be negative",
        id="negative-backoff",
    ),
    pytest.param(
        {"retry_policy": common_pb2.RetryPolicy(max_backoff=duration_pb2.Duration(seconds=1, nanos=-5))},
        "retry_policy.max_backoff is not a valid duration",
        id="mixed-sign-backoff",
    ),
    pytest.param(
        {"retry_policy": common_pb2.RetryPolicy(max_attempts=-2)},
        "retry_policy.max_attempts must be between 1 and 100",
        id="negative-attempts",
    ),
    pytest.param(
        {
            "retry_policy": common_pb2.RetryPolicy(
                initial_backoff=duration_pb2.Duration(seconds=10), max_backoff=duration_pb2.Duration(seconds=1)
            )
        },
        "initial_backoff must not exceed max_backoff",
        id="initial-above-max",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD_SUBMITS)
async def test_invalid_submit_is_rejected_and_writes_nothing(
    cp: Harness, fields: dict[str, object], message: str
) -> None:
    request = job_service_pb2.SubmitJobRequest(**{"job_type": "email.send", **fields})  # type: ignore[arg-type]
    await expect_error(cp.stub.SubmitJob(request), grpc.StatusCode.INVALID_ARGUMENT, message)
    assert await cp.count_jobs() == 0
    assert await cp.pool.fetchval("SELECT count(*) FROM executions") == 0


async def test_payload_over_the_grpc_limit_is_resource_exhausted(cp: Harness) -> None:
    request = job_service_pb2.SubmitJobRequest(job_type="email.send", payload=b"x" * (5 * 1024 * 1024))
    await expect_error(cp.stub.SubmitJob(request), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert await cp.count_jobs() == 0


@pytest.mark.parametrize(
    "rpc",
    ["GetJob", "CancelJob", "ListExecutions", "WaitJob"],
)
async def test_job_id_must_be_a_uuid_and_exist(cp: Harness, rpc: str) -> None:
    request_type = getattr(job_service_pb2, f"{rpc}Request")
    method = getattr(cp.stub, rpc)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(method(request_type(job_id="not-a-uuid")), invalid, "job_id must be a UUID")
    await expect_error(method(request_type(job_id="")), grpc.StatusCode.INVALID_ARGUMENT, "job_id is required")
    missing = str(uuid.uuid4())
    await expect_error(method(request_type(job_id=missing)), grpc.StatusCode.NOT_FOUND, f"job {missing} not found")
    assert await cp.count_jobs() == 0


# --------------------------------------------------------------------------- listing


async def test_list_jobs_pages_with_filters_return_each_job_once_newest_first(cp: Harness) -> None:
    reports = [await cp.submit("report.daily", payload=str(i).encode()) for i in range(6)]
    others = [await cp.submit("email.send") for _ in range(3)]
    await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=reports[2].job_id))
    expected = [j.job_id for j in reversed(reports) if j.job_id != reports[2].job_id]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await cp.stub.ListJobs(
            job_service_pb2.ListJobsRequest(
                status=JobStatus.JOB_STATUS_PENDING, job_type="report.daily", page_size=2, page_token=token
            )
        )
        pages += 1
        assert len(reply.jobs) <= 2
        seen += [j.job_id for j in reply.jobs]
        assert all(j.job_type == "report.daily" and j.status == JobStatus.JOB_STATUS_PENDING for j in reply.jobs)
        token = reply.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == expected

    everything = await cp.stub.ListJobs(job_service_pb2.ListJobsRequest())
    assert [j.job_id for j in everything.jobs] == [j.job_id for j in reversed(reports + others)]
    assert everything.next_page_token == ""

    cancelled = await cp.stub.ListJobs(job_service_pb2.ListJobsRequest(status=JobStatus.JOB_STATUS_CANCELED))
    assert [j.job_id for j in cancelled.jobs] == [reports[2].job_id]

    clamped = await cp.stub.ListJobs(job_service_pb2.ListJobsRequest(page_size=100_000))
    assert len(clamped.jobs) == 9


async def test_list_jobs_rejects_bad_arguments(cp: Harness) -> None:
    list_jobs = cp.stub.ListJobs
    await expect_error(
        list_jobs(job_service_pb2.ListJobsRequest(page_token="garbage!!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token is malformed",
    )
    await expect_error(
        list_jobs(job_service_pb2.ListJobsRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size must not be negative",
    )
    await expect_error(
        list_jobs(job_service_pb2.ListJobsRequest(status=42)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "status 42 is not a known job status",
    )
    await expect_error(
        list_jobs(job_service_pb2.ListJobsRequest(job_type="Bad Type")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "job_type filter",
    )


async def test_list_jobs_filters_by_creation_time_and_idempotency_key(cp: Harness) -> None:
    early = [await cp.submit("report.daily", idempotency_key=f"early-{i}") for i in range(3)]
    between = early[-1].created_at.ToDatetime(tzinfo=dt.UTC) + dt.timedelta(microseconds=1)
    late = [await cp.submit("report.daily", idempotency_key=f"late-{i}") for i in range(3)]

    def created(after: dt.datetime | None = None, before: dt.datetime | None = None) -> job_service_pb2.ListJobsRequest:
        request = job_service_pb2.ListJobsRequest(page_size=2)
        if after is not None:
            request.created_after.FromDatetime(after)
        if before is not None:
            request.created_before.FromDatetime(before)
        return request

    async def every(request: job_service_pb2.ListJobsRequest) -> list[str]:
        found: list[str] = []
        while True:  # paging keeps the filters (the token is bound to them)
            reply = await cp.stub.ListJobs(request)
            found += [j.job_id for j in reply.jobs]
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    assert await every(created(after=between)) == [j.job_id for j in reversed(late)]
    assert await every(created(before=between)) == [j.job_id for j in reversed(early)]
    keyed = await cp.stub.ListJobs(job_service_pb2.ListJobsRequest(idempotency_key="late-1"))
    assert [j.job_id for j in keyed.jobs] == [late[1].job_id]
    other_filters = created(after=between)
    other_filters.page_token = (await cp.stub.ListJobs(created(before=between))).next_page_token
    await expect_error(cp.stub.ListJobs(other_filters), grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    await expect_error(
        cp.stub.ListJobs(created(after=between, before=between)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "created_after must be before created_before",
    )
    await expect_error(
        cp.stub.ListJobs(job_service_pb2.ListJobsRequest(idempotency_key="bad\x00key")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "idempotency_key filter",
    )


async def test_list_executions_pages_through_every_attempt(cp: Harness) -> None:
    job = await cp.submit(retry_policy=common_pb2.RetryPolicy(max_attempts=3))
    for _ in range(2):  # two failed attempts, each queueing the next one at once
        (execution_id,) = [
            r["execution_id"]
            for r in await cp.pool.fetch(
                "SELECT execution_id FROM executions WHERE job_id = $1 AND status = 1", job.job_id
            )
        ]
        claimed = await executions.claim(
            cp.pool, [execution_id], worker_id="w-1", session_id=uuid.uuid4(), lease_seconds=30
        )
        assert len(claimed) == 1
        settled = await executions.fail(cp.pool, execution_id, executions.Owner(), "boom", retry_delay_ms=0)
        assert settled.applied

    attempts: list[int] = []
    token = ""
    pages = 0
    while True:
        reply = await cp.stub.ListExecutions(
            job_service_pb2.ListExecutionsRequest(job_id=job.job_id, page_size=1, page_token=token)
        )
        pages += 1
        attempts += [e.attempt for e in reply.executions]
        token = reply.next_page_token
        if not token:
            break
    assert attempts == [1, 2, 3]
    assert pages == 3

    everything = (await cp.stub.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job.job_id))).executions
    assert [e.status for e in everything] == [
        ExecutionStatus.EXECUTION_STATUS_FAILED,
        ExecutionStatus.EXECUTION_STATUS_FAILED,
        ExecutionStatus.EXECUTION_STATUS_QUEUED,
    ]
    first = everything[0]
    assert first.worker_id == "w-1" and first.error_message == "boom"
    assert first.HasField("claimed_at") and first.HasField("finished_at") and first.HasField("queued_at")
    assert not everything[2].HasField("claimed_at")

    await expect_error(
        cp.stub.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job.job_id, page_token="%%%")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token is malformed",
    )


# --------------------------------------------------------------------------- cancel


async def test_cancel_a_queued_job(cp: Harness, redis_client: redis.asyncio.Redis) -> None:
    job = await cp.submit()
    events = redis_client.pubsub()
    await events.subscribe(cp.queues.keys.job_channel)
    try:
        reply = await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id, reason="not needed"))
        assert reply.job.status == JobStatus.JOB_STATUS_CANCELED
        assert reply.job.error_message == "not needed"
        assert reply.job.HasField("finished_at")
        message = None
        async with asyncio.timeout(5):
            while message is None or message["type"] != "message":
                message = await events.get_message(timeout=1)
        assert b'"job_id": "' + job.job_id.encode() in message["data"]
    finally:
        await events.aclose()  # type: ignore[no-untyped-call]

    execs = (await cp.stub.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job.job_id))).executions
    assert [e.status for e in execs] == [ExecutionStatus.EXECUTION_STATUS_CANCELED]

    again = await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id))
    assert again.job.status == JobStatus.JOB_STATUS_CANCELED
    assert again.job.error_message == "not needed"


async def test_cancel_a_running_job_tells_its_worker(cp: Harness, redis_client: redis.asyncio.Redis) -> None:
    job = await cp.submit()
    (execution_id,) = await cp.execution_ids(job.job_id)
    await executions.claim(cp.pool, [execution_id], worker_id="w-9", session_id=uuid.uuid4(), lease_seconds=30)
    cancels = redis_client.pubsub()
    await cancels.subscribe(cp.queues.keys.cancel_channel)
    try:
        await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id))
        message = None
        async with asyncio.timeout(5):
            while message is None or message["type"] != "message":
                message = await cancels.get_message(timeout=1)
        assert str(execution_id).encode() in message["data"] and b"w-9" in message["data"]
    finally:
        await cancels.aclose()  # type: ignore[no-untyped-call]


async def test_cancel_a_succeeded_job_is_a_failed_precondition(cp: Harness) -> None:
    job = await cp.submit()
    await complete(cp, job.job_id, b"ok")
    await expect_error(
        cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already succeeded",
    )
    got = (await cp.stub.GetJob(job_service_pb2.GetJobRequest(job_id=job.job_id))).job
    assert got.status == JobStatus.JOB_STATUS_SUCCEEDED and got.result == b"ok"


async def test_cancel_reason_is_validated(cp: Harness) -> None:
    job = await cp.submit()
    await expect_error(
        cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id, reason="r" * 2000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reason is 2000 characters",
    )


# --------------------------------------------------------------------------- wait


async def complete(cp: Harness, job_id: str, result: bytes, *, announce: bool = True) -> None:
    """Run the job's queued attempt to success the way the gateway does."""
    (execution_id,) = await cp.execution_ids(job_id)
    session = uuid.uuid4()
    claimed = await executions.claim(cp.pool, [execution_id], worker_id="w", session_id=session, lease_seconds=30)
    assert claimed
    settled = await settling.succeed(cp.pool, execution_id, executions.Owner("w", session), result)
    assert settled.applied
    if announce:
        await cp.queues.publish_job_event(job_id, int(JobStatus.JOB_STATUS_SUCCEEDED))


def wait_request(job_id: str, seconds: float | None = None) -> job_service_pb2.WaitJobRequest:
    request = job_service_pb2.WaitJobRequest(job_id=job_id)
    if seconds is not None:
        request.timeout.FromMilliseconds(int(seconds * 1000))
    return request


async def wait_until_waiting(cp: Harness, count: int = 1) -> None:
    for _ in range(500):
        if cp.waiters.waiting() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} WaitJob call(s) never parked")


async def test_wait_returns_when_the_job_completes(cp: Harness) -> None:
    job = await cp.submit()
    started = time.monotonic()
    waiting = asyncio.ensure_future(cp.stub.WaitJob(wait_request(job.job_id, 20)))
    await wait_until_waiting(cp)
    await complete(cp, job.job_id, b"done")
    reply = await asyncio.wait_for(waiting, 10)
    assert reply.terminal
    assert reply.job.status == JobStatus.JOB_STATUS_SUCCEEDED
    assert reply.job.result == b"done"
    assert time.monotonic() - started < 5
    assert cp.waiters.waiting() == 0


async def test_wait_wakes_every_waiter_of_a_cancelled_job(cp: Harness) -> None:
    job = await cp.submit()
    waiting = [asyncio.ensure_future(cp.stub.WaitJob(wait_request(job.job_id))) for _ in range(3)]
    await wait_until_waiting(cp, 3)
    await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job_id))
    replies = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert all(r.terminal and r.job.status == JobStatus.JOB_STATUS_CANCELED for r in replies)


async def test_wait_times_out_with_terminal_false(cp: Harness) -> None:
    job = await cp.submit()
    started = time.monotonic()
    reply = await cp.stub.WaitJob(wait_request(job.job_id, 0.3))
    elapsed = time.monotonic() - started
    assert not reply.terminal
    assert reply.job.status == JobStatus.JOB_STATUS_PENDING
    assert 0.25 <= elapsed < 3

    await expect_error(
        cp.stub.WaitJob(
            job_service_pb2.WaitJobRequest(job_id=job.job_id, timeout=duration_pb2.Duration(seconds=-1))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "timeout must not be negative",
    )


async def test_wait_on_a_finished_job_returns_at_once(cp: Harness) -> None:
    job = await cp.submit()
    await complete(cp, job.job_id, b"r", announce=False)
    started = time.monotonic()
    reply = await cp.stub.WaitJob(wait_request(job.job_id))
    assert reply.terminal and reply.job.status == JobStatus.JOB_STATUS_SUCCEEDED
    assert time.monotonic() - started < 2


async def test_waiters_recover_a_lost_event_after_resubscribing(cp: Harness, redis_client: redis.asyncio.Redis) -> None:
    """A job finished while the subscription was down is still seen: reconnects wake everyone."""
    job = await cp.submit()
    waiting = asyncio.ensure_future(cp.stub.WaitJob(wait_request(job.job_id, 20)))
    await wait_until_waiting(cp)
    await complete(cp, job.job_id, b"quiet", announce=False)  # no event at all
    # Drop the listener's connection; it resubscribes and every waiter re-reads Postgres.
    assert await redis_client.client_kill_filter(_type="pubsub") >= 1
    reply = await asyncio.wait_for(waiting, 10)
    assert reply.terminal and reply.job.result == b"quiet"


# --------------------------------------------------------------------------- redis down


async def test_submit_succeeds_while_redis_is_down(serve_on: Serve, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    instance = RedisInstance(tmp_path / "redis")
    instance.start()
    client = redis.asyncio.from_url(instance.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        cp = await serve_on(db_pool, client)
        assert cp.waiters.subscribed
        instance.stop()

        started = time.monotonic()
        job = await cp.submit("email.send", payload=b"kept")
        assert time.monotonic() - started < 5
        assert job.status == JobStatus.JOB_STATUS_PENDING
        row = await db_pool.fetchrow("SELECT status, payload FROM jobs WHERE job_id = $1", uuid.UUID(job.job_id))
        assert row is not None and row["payload"] == b"kept"
        assert await db_pool.fetchval("SELECT count(*) FROM executions WHERE status = 1") == 1

        # Without events, WaitJob still notices a finished job by re-reading Postgres.
        waiting = asyncio.ensure_future(cp.stub.WaitJob(wait_request(job.job_id, 20)))
        await wait_until_waiting(cp)
        await complete(cp, job.job_id, b"r", announce=False)
        reply = await asyncio.wait_for(waiting, 10)
        assert reply.terminal

        # Cancelling works too; the announcement is best effort.
        other = await cp.submit("email.send")
        cancelled = await cp.stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=other.job_id))
        assert cancelled.job.status == JobStatus.JOB_STATUS_CANCELED
    finally:
        await client.aclose()
        instance.stop()
