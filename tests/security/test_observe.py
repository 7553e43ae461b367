"""The observe RPCs on the production-like stack (TLS, JWT roles), read as a dashboard would.

One secured stack and one worker (shell and builtins) for the module. Logs: a shell job's lines
are followed live (each line arrives while the job still runs, not at the end) and the stream
ends by itself at terminal; paging returns the same lines. Workers, queue statistics, cluster
status, and WatchJobs seeing submit -> succeeded and a retry -> dead letter. Roles: a submitter
reads its own job's logs only (every RPC x role is in test_matrix).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from dispatchd.cli.main import main as dispatchctl
from dispatchd.client import (
    AsyncClient,
    Client,
    InvalidArgument,
    JobEvent,
    JobEventKind,
    JobNotFound,
    JobStatus,
    LogLine,
    WorkerStatus,
)
from dispatchd.devtools.stack import ServiceProcess
from tests.support.security import Credentials, SecureStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LINES = [f"line-{i}" for i in range(1, 6)]
SCRIPT = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"

Connect = Callable[..., AsyncClient]


@pytest.fixture(scope="module")
def worker(secure_stack: SecureStack) -> Iterator[ServiceProcess]:
    process = secure_stack.add_worker("worker-a", "--builtins", "--enable-shell", "--heartbeat-seconds", "1")
    yield process
    process.terminate()


@pytest_asyncio.fixture
async def connect(secure_stack: SecureStack, creds: Credentials) -> AsyncIterator[Connect]:
    """`connect(subject, *roles)`: a client of the control plane with that identity."""
    clients: list[AsyncClient] = []

    def make(subject: str, *roles: str) -> AsyncClient:
        security = creds.client("admin-cli", token=creds.token(subject, *roles))
        clients.append(AsyncClient(secure_stack.control_plane, security=security))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def _follow(client: AsyncClient, **target: str) -> list[tuple[float, LogLine]]:
    return [(time.time(), line) async for line in client.follow_logs(**target)]


async def test_logs_are_followed_live_and_paged(connect: Connect, worker: ServiceProcess) -> None:
    operator, viewer = connect("ops", "operator"), connect("eve", "viewer")
    job = (await operator.submit("shell", {"command": SCRIPT}, max_attempts=1)).job
    received = await asyncio.wait_for(_follow(viewer, job_id=job.job_id), 60)

    # The stream ended by itself: the job is terminal, and every line came, in order.
    done = await viewer.get(job.job_id)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert [line.message for _, line in received] == LINES
    assert done.finished_at is not None
    # Live: pushed as stored (notices), not found by a poll or at the end.
    assert received[0][0] < done.finished_at.timestamp()
    latencies = [at - line.emitted_at.timestamp() for at, line in received if line.emitted_at is not None]
    assert statistics.median(latencies) < 1.0, latencies

    ids = [line.log_id for _, line in received]
    pages = []
    token = ""
    while True:
        page = await viewer.list_logs(job.job_id, page_size=2, page_token=token)
        pages.append([line.log_id for line in page.lines])
        if not (token := page.next_page_token):
            break
    assert [i for p in pages for i in p] == ids and max(len(p) for p in pages) == 2
    first = await viewer.list_logs(job.job_id, page_size=2)
    rest = await viewer.list_logs(job.job_id, page_token=first.resume_token)
    assert [line.log_id for line in rest.lines] == ids[2:] and rest.next_page_token == ""

    # By execution, and from a token: the backlog, then the end (it is terminal).
    (execution,) = await viewer.executions(job.job_id)
    start = (await viewer.list_logs(execution_id=execution.execution_id, page_size=2)).resume_token
    by_execution = await _follow(viewer, execution_id=execution.execution_id, page_token=start)
    assert [line.log_id for _, line in by_execution] == ids[2:]
    with pytest.raises(InvalidArgument, match="page_token"):  # a token pages the listing it came from
        await _follow(viewer, execution_id=execution.execution_id, page_token=first.resume_token)
    assert {line.attempt for _, line in received} == {1} and {line.stream for _, line in received} == {"stdout"}


async def test_log_reads_refuse_bad_input(connect: Connect, worker: ServiceProcess) -> None:
    operator, viewer = connect("ops", "operator"), connect("eve", "viewer")
    job = (await operator.submit("builtin.echo", "x")).job
    other = (await operator.submit("builtin.echo", "y")).job
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(JobNotFound):
        await viewer.list_logs(unknown)
    with pytest.raises(JobNotFound):
        await _follow(viewer, job_id=unknown)
    with pytest.raises(JobNotFound, match="execution"):
        await viewer.list_logs(execution_id=unknown)
    with pytest.raises(InvalidArgument, match="page_token"):
        await viewer.list_logs(job.job_id, page_token="not-a-token")
    # A token is bound to its listing: another job's is refused, as is a forged position.
    token = (await viewer.list_logs(other.job_id, page_size=1)).resume_token or ""
    for bad in ("eyJ4IjoxfQ.AAAA", token):
        if bad:
            with pytest.raises(InvalidArgument, match="page_token"):
                await viewer.list_logs(job.job_id, page_token=bad)
    with pytest.raises(InvalidArgument, match="exactly one"):
        await viewer.list_logs()
    with pytest.raises(InvalidArgument, match="exactly one"):
        await viewer.list_logs(job.job_id, execution_id=unknown)
    with pytest.raises(InvalidArgument, match="job_id must be a UUID"):
        await viewer.list_logs("nope")


async def test_a_submitter_reads_the_logs_of_its_own_jobs_only(connect: Connect, worker: ServiceProcess) -> None:
    alice, bob = connect("alice", "submitter"), connect("bob", "submitter")
    job = (await alice.submit("shell", {"command": "echo mine"}, max_attempts=1)).job
    assert [line.message for _, line in await asyncio.wait_for(_follow(alice, job_id=job.job_id), 30)] == ["mine"]
    with pytest.raises(JobNotFound):
        await bob.list_logs(job.job_id)
    with pytest.raises(JobNotFound):
        await _follow(bob, job_id=job.job_id)


async def test_workers_queues_and_cluster_status(connect: Connect, worker: ServiceProcess) -> None:
    operator, viewer = connect("ops", "operator"), connect("eve", "viewer")
    (seen,) = [w for w in await viewer.workers() if w.worker_id == "worker-a"]
    assert {"shell", "builtin.echo"} <= set(seen.capabilities)
    assert seen.status in (WorkerStatus.READY, WorkerStatus.BUSY) and seen.max_concurrency > 0
    assert seen.gateway_id and seen.last_heartbeat_at is not None
    assert dt.datetime.now(dt.UTC) - seen.last_heartbeat_at < dt.timedelta(seconds=30)

    # Nobody takes obs.idle: three due, two delayed.
    for _ in range(3):
        await operator.submit("obs.idle", "due")
    for _ in range(2):
        await operator.submit("obs.idle", "later", delay=dt.timedelta(hours=1))
    (stats,) = await viewer.queue_stats(job_type="obs.idle")
    assert (stats.job_type, stats.depth, stats.delayed, stats.running) == ("obs.idle", 3, 2, 0)
    assert stats.oldest_due_age is not None and dt.timedelta(0) <= stats.oldest_due_age < dt.timedelta(minutes=1)
    assert "obs.idle" in {q.job_type for q in await viewer.queue_stats()}

    status = await viewer.cluster_status()
    assert status.leader_held and status.leader_id and status.leader_epoch >= 1
    assert status.lease_remaining is not None and status.lease_remaining > dt.timedelta(0)
    assert status.primary and not status.passive and not status.database_read_only
    assert status.recorded_primary == status.region == status.configured_primary


async def _watch_until(client: AsyncClient, ready: asyncio.Event, last: JobEventKind, **flt: str) -> list[JobEvent]:
    events: list[JobEvent] = []
    async for message in client.watch(**flt):
        if message.subscribed:
            ready.set()
        elif message.is_event:
            events.append(message)
            if message.kind is last:
                return events
    raise AssertionError("the watch ended")


async def test_watch_sees_submit_to_succeeded_and_retry_to_dead_letter(
    connect: Connect, worker: ServiceProcess
) -> None:
    operator, viewer = connect("ops", "operator"), connect("eve", "viewer")
    ready = [asyncio.Event() for _ in range(3)]
    watches = [
        _watch_until(viewer, ready[0], JobEventKind.SUCCEEDED, job_type="builtin.echo"),
        _watch_until(viewer, ready[1], JobEventKind.DEAD_LETTERED, job_type="builtin.fail"),
        _watch_until(viewer, ready[2], JobEventKind.DEAD_LETTERED, status="failed"),
    ]
    tasks = [asyncio.create_task(w) for w in watches]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)

    echoed = (await operator.submit("builtin.echo", "hi")).job
    backoff = dt.timedelta(milliseconds=50)
    failing = (await operator.submit("builtin.fail", max_attempts=2, initial_backoff=backoff)).job
    echo_events, fail_events, failed = await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert {e.job_id for e in echo_events} == {echoed.job_id}
    kinds = [e.kind for e in echo_events]
    # A start applied in the same batch as its result is folded into it: no STARTED then.
    assert kinds in (
        [JobEventKind.SUBMITTED, JobEventKind.SUCCEEDED],
        [JobEventKind.SUBMITTED, JobEventKind.STARTED, JobEventKind.SUCCEEDED],
    ), kinds
    assert [e.status for e in echo_events][:: len(kinds) - 1] == [JobStatus.PENDING, JobStatus.SUCCEEDED]
    assert all(e.job_type == "builtin.echo" and e.at is not None for e in echo_events)

    # Submitted, (started,) retrying, (started,) dead-lettered; the status filter sees only the end.
    story = [e.kind for e in fail_events if e.kind is not JobEventKind.STARTED]
    assert story == [JobEventKind.SUBMITTED, JobEventKind.RETRYING, JobEventKind.DEAD_LETTERED], story
    assert {e.job_id for e in fail_events} == {failing.job_id}
    assert [(e.job_id, e.kind, e.status) for e in failed] == [
        (failing.job_id, JobEventKind.DEAD_LETTERED, JobStatus.FAILED)
    ]


def test_dispatchctl_observe_commands(
    secure_stack: SecureStack, creds: Credentials, worker: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = creds.pki.client("admin-cli")
    ctl = [
        "--target", secure_stack.control_plane, "--token", creds.token("ops", "operator"),
        "--ca", str(creds.pki.ca), "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip
    assert dispatchctl([*ctl, "-o", "json", "submit", "shell", "--payload", "echo one; echo two", "--wait"]) == 0
    job_id = json.loads(capsys.readouterr().out)["job"]["job_id"]
    assert dispatchctl([*ctl, "logs", job_id]) == 0
    assert capsys.readouterr().out == "one\ntwo\n"
    assert dispatchctl([*ctl, "-o", "json", "logs", job_id, "--follow"]) == 0
    assert [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()] == ["one", "two"]
    assert dispatchctl([*ctl, "workers"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["WORKER", "STATUS"] and any(row.startswith("worker-a ") for row in table)
    assert dispatchctl([*ctl, "-o", "json", "queues"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["queues"], list)
    assert dispatchctl([*ctl, "status"]) == 0
    assert "(primary)" in capsys.readouterr().out
    assert dispatchctl([*ctl, "logs", "00000000-0000-4000-8000-000000000000"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err

    # watch: prints events as they come; the submits go on until it has seen one (it may
    # subscribe after the first), so it exits by itself with --count.
    exits: list[int] = []
    watching = threading.Thread(
        target=lambda: exits.append(dispatchctl([*ctl, "-o", "json", "watch", "--type", "obs.cli", "--count", "1"]))
    )
    watching.start()
    security = creds.client("admin-cli", token=creds.token("ops", "operator"))
    with Client(secure_stack.control_plane, security=security) as client:
        for _ in range(40):
            client.submit("obs.cli")
            watching.join(0.25)
            if not watching.is_alive():
                break
    assert exits == [0]
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (event["job_type"], event["kind"], event["status"]) == (
        "obs.cli",
        "JOB_EVENT_KIND_SUBMITTED",
        "JOB_STATUS_PENDING",
    )
