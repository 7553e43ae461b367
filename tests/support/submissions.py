"""Jobs submitted straight through the store, as the control plane would.

Invariant: every test that needs a job without a control-plane process builds it here, so
a new `NewJob` field or a change in how the first attempt is queued is made in one place.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import ExecutionStatus
from dispatchd.platform.store import executions, submits
from dispatchd.platform.store.rows import QueuedRef
from tests.support import settling

PREFIX = "dispatchd"  # the services' default Redis key prefix


async def submit(
    pool: asyncpg.Pool | asyncpg.Connection,
    queues: redis.asyncio.Redis | None = None,
    job_type: str = "work",
    payload: bytes = b"",
    *,
    max_attempts: int = 3,
    initial_backoff_ms: int = 0,
    priority: int = 0,
    key: str | None = None,
    metadata: dict[str, str] | None = None,
    timeout_ms: int | None = None,
    run_at: dt.datetime | None = None,
    delay_ms: int | None = None,
    submitted_by: str | None = None,
    trace_context: dict[str, str] | None = None,
) -> submits.Submitted:
    """Insert a job; with `queues`, also push its first attempt onto its ready queue.

    Without `queues` the attempt exists in Postgres only, as if the control plane died
    before pushing it (the scheduler's re-queueing finds it).
    """
    new = submits.NewJob(
        job_type=job_type,
        payload=payload,
        priority=priority,
        idempotency_key=key,
        metadata=metadata or {},
        retry=RetryPolicy(max_attempts, initial_backoff_ms, max(initial_backoff_ms, 1)),
        retry_policy_set=True,
        execution_timeout_ms=timeout_ms,
        run_at=run_at,
        delay_ms=delay_ms,
        submitted_by=submitted_by,
        trace_context=trace_context,
    )
    submitted = await submits.submit(pool, new)
    if queues is not None:
        await ReadyQueues(queues, PREFIX).push([first_attempt(submitted)])
    return submitted


def first_attempt(submitted: submits.Submitted) -> QueuedRef:
    """The attempt a fresh (not deduplicated) submission queued."""
    assert submitted.queued is not None, f"job {submitted.job.job_id} was deduplicated, nothing queued"
    return submitted.queued


async def complete(
    pool: asyncpg.Pool, client: redis.asyncio.Redis, job_id: str, result: bytes, ok: bool = True
) -> None:
    """Play the worker: claim the job's queued attempt and settle it, then announce the outcome."""
    (execution_id,) = [
        r["execution_id"]
        for r in await pool.fetch(
            "SELECT execution_id FROM executions WHERE job_id = $1 AND status = $2", job_id, ExecutionStatus.QUEUED
        )
    ]
    session = uuid.uuid4()
    claimed = await executions.claim(pool, [execution_id], worker_id="w", session_id=session, lease_seconds=30)
    assert claimed
    if ok:
        settled = await settling.succeed(pool, execution_id, executions.Owner("w", session), result)
    else:
        settled = await executions.fail(pool, execution_id, executions.Owner(), "exit status 3", result=result)
    assert settled.applied and settled.job_status is not None
    await ReadyQueues(client, PREFIX).publish_job_event(job_id, int(settled.job_status))
