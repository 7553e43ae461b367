"""Group commit of start notices and results (worker_gateway.settler) on real Postgres and Redis.

Reports queued together commit in one transaction (successes alone in one statement that
locks as the transaction does), and each caller gets its own outcome:
a stale or cancelled neighbour changes nothing, a start folded into its result still
records a start, and one value Postgres rejects fails only its own caller.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store import executions, jobs
from dispatchd.platform.store.rows import Claim
from dispatchd.platform.store.settlements import Finished, Started
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.settler import Settler
from tests.support.submissions import PREFIX, first_attempt, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def settler(db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> Settler:
    return Settler(db_pool, Outcomes(ReadyQueues(redis_client, PREFIX)))


async def claimed(pool: asyncpg.Pool, session: uuid.UUID, worker: str = "w1") -> Claim:
    ref = first_attempt(await submit(pool))
    (claim,) = await executions.claim(pool, [ref.execution_id], worker_id=worker, session_id=session, lease_seconds=30)
    return claim


def success(claim: Claim, session: uuid.UUID, worker: str = "w1", token: uuid.UUID | None = None) -> Finished:
    return Finished(claim.execution_id, worker, session, True, b"ok", claim_token=token or claim.claim_token)


async def status(pool: asyncpg.Pool, claim: Claim) -> tuple[ExecutionStatus, JobStatus]:
    row = await pool.fetchrow(
        "SELECT e.status, j.status AS job FROM executions e JOIN jobs j USING (job_id) WHERE execution_id = $1",
        claim.execution_id,
    )
    assert row is not None
    return ExecutionStatus(row["status"]), JobStatus(row["job"])


async def test_concurrent_results_of_several_streams_commit_together(db_pool: asyncpg.Pool, settler: Settler) -> None:
    sessions = [(f"w{i}", uuid.uuid4()) for i in range(4)]
    claims = [(w, s, await claimed(db_pool, s, w)) for w, s in sessions for _ in range(10)]
    settled = await asyncio.gather(*(settler.finish(success(c, s, w)) for w, s, c in claims))
    assert all(s.applied and s.job_status is JobStatus.SUCCEEDED for s in settled)
    assert [s.execution_id for s in settled] == [c.execution_id for _, _, c in claims]
    assert settler.reports == 40 and settler.transactions == 1
    for _, _, c in claims:
        assert await status(db_pool, c) == (ExecutionStatus.SUCCEEDED, JobStatus.SUCCEEDED)


async def test_a_stale_result_in_a_batch_changes_nothing_beside_accepted_neighbours(
    db_pool: asyncpg.Pool, settler: Settler
) -> None:
    session = uuid.uuid4()
    left, stale, right = [await claimed(db_pool, session) for _ in range(3)]
    outcomes = await asyncio.gather(
        settler.finish(success(left, session)),
        settler.finish(success(stale, session, token=uuid.uuid4())),  # not this claim
        settler.finish(success(right, session)),
        settler.finish(success(right, uuid.uuid4())),  # another stream, later: waits, then stale
    )
    assert [o.applied for o in outcomes] == [True, False, True, False]
    assert await status(db_pool, stale) == (ExecutionStatus.CLAIMED, JobStatus.DISPATCHING)
    assert await status(db_pool, right) == (ExecutionStatus.SUCCEEDED, JobStatus.SUCCEEDED)


async def test_a_cancelled_jobs_result_in_a_batch_does_not_resurrect_it(
    db_pool: asyncpg.Pool, settler: Settler
) -> None:
    session = uuid.uuid4()
    cancelled, other = await claimed(db_pool, session), await claimed(db_pool, session)
    await jobs.cancel(db_pool, cancelled.job_id, "no longer wanted")
    failure = Finished(cancelled.execution_id, "w1", session, False, None, "boom")
    late, fine, late_failure = await asyncio.gather(
        settler.finish(success(cancelled, session)), settler.finish(success(other, session)), settler.finish(failure)
    )
    assert not late.applied and fine.applied and not late_failure.applied
    assert await status(db_pool, cancelled) == (ExecutionStatus.CANCELED, JobStatus.CANCELED)
    assert await db_pool.fetchval("SELECT count(*) FROM executions WHERE job_id = $1", cancelled.job_id) == 1


async def test_a_start_and_its_result_in_one_batch_end_succeeded_with_a_start(
    db_pool: asyncpg.Pool, settler: Settler
) -> None:
    session = uuid.uuid4()
    claim, started_only = await claimed(db_pool, session), await claimed(db_pool, session)
    began, ran, settled = await asyncio.gather(
        settler.start(Started(claim.execution_id, session)),
        settler.start(Started(started_only.execution_id, session)),
        settler.finish(success(claim, session)),
    )
    assert began and ran and settled.applied and settler.transactions == 1
    row = await db_pool.fetchrow("SELECT * FROM executions WHERE execution_id = $1", claim.execution_id)
    assert row["status"] == ExecutionStatus.SUCCEEDED and row["started_at"] == row["claimed_at"]
    assert await status(db_pool, started_only) == (ExecutionStatus.RUNNING, JobStatus.RUNNING)


async def test_a_value_postgres_rejects_fails_only_its_own_caller(db_pool: asyncpg.Pool, settler: Settler) -> None:
    session = uuid.uuid4()
    bad, before, after = [await claimed(db_pool, session) for _ in range(3)]
    outcomes = await asyncio.gather(
        settler.finish(success(before, session)),
        settler.finish(Finished(bad.execution_id, "w1", session, False, None, "NUL \x00 in text")),
        settler.finish(success(after, session)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], asyncpg.exceptions.DataError)
    assert [o.applied for o in (outcomes[0], outcomes[2])] == [True, True]  # type: ignore[union-attr]
    assert await status(db_pool, bad) == (ExecutionStatus.CLAIMED, JobStatus.DISPATCHING)


async def test_successes_alone_wait_for_a_held_job_lock_and_see_what_it_committed(
    db_pool: asyncpg.Pool, settler: Settler
) -> None:
    """The one-statement path (successes alone) locks as the transaction path does: a result
    waits for the job's lock, then finds the execution cancelled and changes nothing."""
    session = uuid.uuid4()
    held, free = await claimed(db_pool, session), await claimed(db_pool, session)
    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE", held.job_id)
        late = asyncio.ensure_future(settler.finish(success(held, session)))
        fine = asyncio.ensure_future(settler.finish(success(free, session)))
        await asyncio.sleep(0.3)
        assert not late.done() and not fine.done()  # one statement for both: it waits for the lock
        await conn.execute("UPDATE jobs SET status = $2 WHERE job_id = $1", held.job_id, JobStatus.CANCELED)
        await conn.execute(
            "UPDATE executions SET status = $2 WHERE execution_id = $1", held.execution_id, ExecutionStatus.CANCELED
        )
    stale, applied = await late, await fine
    assert not stale.applied and stale.job_id == held.job_id
    assert applied.applied and applied.job_status is JobStatus.SUCCEEDED
    assert settler.transactions == 1
    assert await status(db_pool, held) == (ExecutionStatus.CANCELED, JobStatus.CANCELED)
    assert await status(db_pool, free) == (ExecutionStatus.SUCCEEDED, JobStatus.SUCCEEDED)
