"""The scheduler repairs only what needs repairing: nothing under healthy load, an orphan still.

A burst of jobs runs through a healthy stack (two schedulers, one worker) while rows sit
QUEUED in Postgres for the milliseconds between commit and push, and between a gateway's pop
and its claim: the repair counter must stay 0. Then an execution that exists in Postgres only
(as if the control plane died before pushing it) must be re-queued, counted once, and run.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from dispatchd.devtools.stack import SCHEDULER, Stack, kind_of
from dispatchd.platform import db
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support.polling import wait_until
from tests.support.scrape import Scrape
from tests.support.submissions import submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BURST = 1500
CALLERS = 32
REPAIRS = "dispatchd_scheduler_repairs_total"


async def _burst(target: str) -> list[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        pending = list(range(BURST))
        ids: list[str] = []

        async def caller() -> None:
            while pending:
                i = pending.pop()
                request = job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=f"{i}".encode())
                ids.append((await jobs.SubmitJob(request)).job.job_id)

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return ids


def _succeeded(stack: Stack, job_id: str) -> bool:
    reply = stack.jobs().WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=60)), timeout=65
    )
    return bool(reply.job.status == common_pb2.JOB_STATUS_SUCCEEDED)


def _repairs(stack: Stack, **labels: str) -> float:
    urls = {name: url for name, url in stack.metrics_urls().items() if kind_of(name) == SCHEDULER}
    return Scrape.of(urls).total(REPAIRS, **labels)


async def _orphan(database_url: str) -> str:
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        return str((await submit(pool, job_type="builtin.echo")).job.job_id)  # in Postgres only
    finally:
        await pool.close()


def test_a_healthy_burst_repairs_nothing_and_an_orphan_is_still_repaired(stack: Stack) -> None:
    since = stack.db_now()
    stack.add_worker("worker-1", "--builtins", "--concurrency", "32")
    stack.wait_workers(["worker-1"], since)

    ids = asyncio.run(_burst(stack.control_plane_target))
    assert all(_succeeded(stack, job_id) for job_id in ids)
    time.sleep(3)  # a few more passes, past the grace of anything still remembered
    assert _repairs(stack) == 0, "the reconcile pass repaired rows the fast path was handling"

    orphan = asyncio.run(_orphan(stack.database_url))
    assert _succeeded(stack, orphan)
    wait_until(lambda: _repairs(stack, kind="requeued") == 1, 5, "the orphan's re-queue is counted once")
    assert _repairs(stack) == 1
