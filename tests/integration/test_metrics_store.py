"""What the store hands the metrics, against real Postgres: queue gauges, claim waits, settlement ages."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from prometheus_client import REGISTRY

from dispatchd.platform.store import executions, jobs
from dispatchd.scheduler.metrics import QueueGauges
from tests.support.submissions import first_attempt, submit


def gauge(name: str, job_type: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"job_type": job_type})


async def test_queue_gauges_count_due_work_read_zero_when_drained_and_clear_when_not_leading(
    db_pool: asyncpg.Pool,
) -> None:
    due = [await submit(db_pool, job_type="gauge.due") for _ in range(3)]
    await submit(db_pool, job_type="gauge.later", delay_ms=60_000)  # not due: not on a ready queue yet
    sampler = QueueGauges(db_pool)
    await sampler.sample()
    assert gauge("dispatchd_queue_depth", "gauge.due") == 3
    oldest = gauge("dispatchd_queue_oldest_due_age_seconds", "gauge.due")
    assert oldest is not None and oldest > 0
    assert gauge("dispatchd_queue_depth", "gauge.later") is None

    for submitted in due:
        await jobs.cancel(db_pool, submitted.job.job_id, "drained")
    await sampler.sample()
    assert gauge("dispatchd_queue_depth", "gauge.due") == 0  # emptied, not stale
    assert gauge("dispatchd_queue_oldest_due_age_seconds", "gauge.due") == 0

    sampler.clear()
    assert gauge("dispatchd_queue_depth", "gauge.due") is None


async def test_claims_and_settlements_carry_what_the_histograms_observe(db_pool: asyncpg.Pool) -> None:
    submitted = await submit(db_pool, job_type="gauge.timed", max_attempts=1)
    started = dt.datetime.now(dt.UTC)
    [claim] = await executions.claim(
        db_pool, [first_attempt(submitted).execution_id], worker_id="w", session_id=uuid.uuid4(), lease_seconds=30
    )
    assert claim.waited_seconds is not None and 0 <= claim.waited_seconds < 10
    settled = await executions.fail(db_pool, claim.execution_id, executions.Owner(), "boom")
    assert settled.applied and settled.job_type == "gauge.timed"
    age = (dt.datetime.now(dt.UTC) - started).total_seconds()
    assert settled.job_age_seconds is not None and 0 < settled.job_age_seconds < age + 5
