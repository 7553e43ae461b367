"""Every guarded transition of the store, and the races between its writers, on real Postgres.

The writers are the gateway (results, releases), the scheduler (lease expiry, timeouts,
silent workers; fenced by its epoch) and the control plane (cancel, redrive). Each race is
run in both orders and then concurrently: exactly one writer wins, the loser changes
nothing, and no terminal state is ever undone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

import asyncpg
import pytest

from dispatchd.platform.errors import FailedPrecondition
from dispatchd.platform.states import (
    EXECUTION_CLAIMABLE,
    EXECUTION_OWNED,
    JOB_REDRIVE_SOURCE,
    ExecutionStatus,
    JobStatus,
)
from dispatchd.platform.store import dead_letters, executions, fence, jobs, repairs, workers
from dispatchd.platform.store.dead_letters import DeadLetterFilter
from dispatchd.platform.store.executions import Owner
from dispatchd.platform.store.fence import Fenced
from dispatchd.platform.store.rows import Claim
from tests.support import settling
from tests.support.submissions import first_attempt, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SESSION = uuid.UUID(int=7)


async def claimed(
    pool: asyncpg.Pool, *, lease: float = 30, session: uuid.UUID = SESSION, timeout_ms: int | None = None
) -> Claim:
    ref = first_attempt(await submit(pool, timeout_ms=timeout_ms))
    (claim,) = await executions.claim(pool, [ref.execution_id], worker_id="w1", session_id=session, lease_seconds=lease)
    return claim


async def rows(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM executions WHERE job_id = $1 ORDER BY attempt", job_id))


async def statuses(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[ExecutionStatus]:
    return [ExecutionStatus(r["status"]) for r in await rows(pool, job_id)]


async def expire(pool: asyncpg.Pool, execution_id: uuid.UUID) -> None:
    await pool.execute(
        "UPDATE executions SET lease_expires_at = clock_timestamp() - interval '1 second' WHERE execution_id = $1",
        execution_id,
    )


WORKER = Owner(worker_id="w1", session_id=SESSION)


async def registered(pool: asyncpg.Pool) -> None:
    """The stream SESSION of worker w1 is registered (a heartbeat renews only a current stream's leases)."""
    await workers.register(
        pool, worker_id="w1", session_id=SESSION, gateway_id="g", capabilities=["work"], max_concurrency=10, labels={}
    )
SCHEDULER = Owner(lease_expired=True)


# --------------------------------------------------------------------------- result vs lease expiry


async def test_lease_expiry_first_then_the_late_result_is_stale(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool)
    await expire(db_pool, claim.execution_id)
    assert (await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired")).applied
    late = await settling.succeed(db_pool, claim.execution_id, WORKER, b"late")
    assert not late.applied
    assert await statuses(db_pool, claim.job_id) == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]
    job = await jobs.get(db_pool, claim.job_id)
    assert (job.status, job.attempts, job.result) == (JobStatus.PENDING, 2, None)


async def test_result_first_then_the_expiry_changes_nothing(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool)
    assert (await settling.succeed(db_pool, claim.execution_id, WORKER, b"ok")).applied
    await expire(db_pool, claim.execution_id)  # even a row that looks expired is terminal now
    assert not (await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired")).applied
    assert await statuses(db_pool, claim.job_id) == [ExecutionStatus.SUCCEEDED]
    assert (await jobs.get(db_pool, claim.job_id)).status is JobStatus.SUCCEEDED


async def test_renewed_lease_is_not_failed_as_expired(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool, lease=0.05)
    await asyncio.sleep(0.1)
    assert await repairs.expired_leases(db_pool, 10) == [claim.execution_id]
    # A heartbeat lands between the scheduler's SELECT and its guarded UPDATE.
    await registered(db_pool)
    assert (await settling.beat(db_pool, "w1", SESSION, 30)).renewed == 1
    assert not (await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired")).applied
    assert await statuses(db_pool, claim.job_id) == [ExecutionStatus.CLAIMED]


@pytest.mark.parametrize("success", [True, False])
async def test_result_racing_lease_expiry_exactly_one_wins(db_pool: asyncpg.Pool, success: bool) -> None:
    claims = [await claimed(db_pool) for _ in range(20)]
    for claim in claims:
        await expire(db_pool, claim.execution_id)

    async def worker(claim: Claim) -> bool:
        if success:
            return (await settling.succeed(db_pool, claim.execution_id, WORKER, b"r")).applied
        return (await executions.fail(db_pool, claim.execution_id, WORKER, "boom")).applied

    async def scheduler(claim: Claim) -> bool:
        return (await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired")).applied

    outcomes = await asyncio.gather(*(asyncio.gather(worker(c), scheduler(c)) for c in claims))
    for claim, (worker_won, scheduler_won) in zip(claims, outcomes, strict=True):
        assert worker_won != scheduler_won, "exactly one writer settles an attempt"
        history = await rows(db_pool, claim.job_id)
        job = await jobs.get(db_pool, claim.job_id)
        if worker_won and success:
            assert [ExecutionStatus(r["status"]) for r in history] == [ExecutionStatus.SUCCEEDED]
            assert job.status is JobStatus.SUCCEEDED
        else:
            assert [ExecutionStatus(r["status"]) for r in history] == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]
            assert history[0]["error_message"] == ("lease expired" if scheduler_won else "boom")
            assert (job.status, job.attempts) == (JobStatus.PENDING, 2)


# --------------------------------------------------------------------------- cancel vs completion


async def test_cancel_first_then_the_result_never_changes_the_job(db_pool: asyncpg.Pool) -> None:
    for success in (True, False):
        claim = await claimed(db_pool)
        assert await settling.start(db_pool, claim.execution_id, SESSION)
        cancelled = await jobs.cancel(db_pool, claim.job_id, "operator")
        assert cancelled.stopped == [(claim.execution_id, "w1")]
        if success:
            late = await settling.succeed(db_pool, claim.execution_id, WORKER, b"done anyway")
        else:
            late = await executions.fail(db_pool, claim.execution_id, WORKER, "failed after cancel")
        assert not late.applied
        # Not resurrected: no retry was queued, the job stays cancelled.
        assert await statuses(db_pool, claim.job_id) == [ExecutionStatus.CANCELED]
        job = await jobs.get(db_pool, claim.job_id)
        assert (job.status, job.result, job.error_message) == (JobStatus.CANCELED, None, "operator")


async def test_result_first_then_cancel_is_refused(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool)
    assert (await settling.succeed(db_pool, claim.execution_id, WORKER, b"ok")).applied
    with pytest.raises(FailedPrecondition):
        await jobs.cancel(db_pool, claim.job_id, "too late")
    assert (await jobs.get(db_pool, claim.job_id)).status is JobStatus.SUCCEEDED


async def test_cancel_racing_completion_exactly_one_wins(db_pool: asyncpg.Pool) -> None:
    claims = [await claimed(db_pool) for _ in range(20)]

    async def cancel(claim: Claim) -> bool:
        try:
            return (await jobs.cancel(db_pool, claim.job_id, "race")).changed
        except FailedPrecondition:
            return False

    async def complete(claim: Claim) -> bool:
        return (await settling.succeed(db_pool, claim.execution_id, WORKER, b"r")).applied

    outcomes = await asyncio.gather(*(asyncio.gather(cancel(c), complete(c)) for c in claims))
    for claim, (cancelled, completed) in zip(claims, outcomes, strict=True):
        assert cancelled != completed
        job = await jobs.get(db_pool, claim.job_id)
        expected = (JobStatus.CANCELED, ExecutionStatus.CANCELED) if cancelled else (
            JobStatus.SUCCEEDED,
            ExecutionStatus.SUCCEEDED,
        )
        assert (job.status, *(await statuses(db_pool, claim.job_id))) == expected


# --------------------------------------------------------------------------- claim tokens, owners


async def test_result_with_a_claim_token_must_match_the_current_claim(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool)
    wrong = Owner(worker_id="w1", session_id=SESSION, claim_token=uuid.uuid4())
    assert not (await settling.succeed(db_pool, claim.execution_id, wrong, b"x")).applied
    other_stream = Owner(worker_id="w1", session_id=uuid.uuid4(), claim_token=claim.claim_token)
    assert not (await settling.succeed(db_pool, claim.execution_id, other_stream, b"x")).applied
    right = Owner(worker_id="w1", session_id=SESSION, claim_token=claim.claim_token)
    settled = await settling.succeed(db_pool, claim.execution_id, right, b"x")
    assert settled.applied and settled.worker_id == "w1"
    assert not (await settling.succeed(db_pool, claim.execution_id, right, b"again")).applied


async def test_reregistration_releases_what_earlier_sessions_held(db_pool: asyncpg.Pool) -> None:
    old = await claimed(db_pool, session=uuid.uuid4())
    new_session = uuid.uuid4()
    await workers.register(
        db_pool,
        worker_id="w1",
        session_id=new_session,
        gateway_id="gw",
        capabilities=["work"],
        max_concurrency=1,
        labels={},
    )
    released = await executions.release_owned(
        db_pool, worker_id="w1", exclude_session=new_session, reason="worker re-registered"
    )
    assert [s.applied for s in released] == [True]
    assert released[0].retry is not None and released[0].retry.available_at <= dt.datetime.now(dt.UTC)
    assert await statuses(db_pool, old.job_id) == [ExecutionStatus.FAILED, ExecutionStatus.QUEUED]
    # The restarted worker's stream does not own the old claim; the old stream's result is stale.
    assert not (await settling.succeed(db_pool, old.execution_id, Owner("w1", new_session), b"x")).applied


# --------------------------------------------------------------------------- heartbeat lists


async def test_heartbeat_list_renews_only_listed_owned_executions(db_pool: asyncpg.Pool) -> None:
    a = await claimed(db_pool, lease=1)
    b = await claimed(db_pool, lease=1)
    foreign = await claimed(db_pool, lease=1, session=uuid.uuid4())
    await registered(db_pool)
    pulse = await settling.beat(db_pool, "w1", SESSION, 60, listed=(a.execution_id, foreign.execution_id))
    assert pulse.renewed == 1
    leases = {
        r["execution_id"]: r["lease_expires_at"]
        for r in await db_pool.fetch("SELECT execution_id, lease_expires_at FROM executions")
    }
    assert leases[a.execution_id] > leases[b.execution_id] + dt.timedelta(seconds=50)
    assert leases[foreign.execution_id] < leases[a.execution_id] - dt.timedelta(seconds=50)
    assert pulse.owned == frozenset({a.execution_id, b.execution_id})  # a listing beat learns what the stream owns
    assert (await settling.beat(db_pool, "w1", SESSION, 60)).renewed == 2  # no list: everything owned


# --------------------------------------------------------------------------- execution timeouts


async def test_deadline_is_set_at_claim_and_moves_to_the_start(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool, timeout_ms=300)
    assert claim.execution_timeout_ms == 300 and claim.deadline_at is not None
    await asyncio.sleep(0.1)
    assert await settling.start(db_pool, claim.execution_id, SESSION)
    row = (await rows(db_pool, claim.job_id))[0]
    assert row["deadline_at"] - row["started_at"] == dt.timedelta(milliseconds=300)
    untimed = await claimed(db_pool)
    assert untimed.deadline_at is None
    assert await repairs.timed_out(db_pool, 10) == []
    await asyncio.sleep(0.35)
    # Heartbeats renew leases, never deadlines.
    await registered(db_pool)
    await settling.beat(db_pool, "w1", SESSION, 60)
    assert await repairs.timed_out(db_pool, 10) == [claim.execution_id]
    settled = await executions.fail(db_pool, claim.execution_id, Owner(deadline_passed=True), "execution timed out")
    assert settled.applied and settled.worker_id == "w1" and settled.retry is not None
    assert not (await settling.succeed(db_pool, claim.execution_id, WORKER, b"late")).applied
    assert await repairs.timed_out(db_pool, 10) == []


async def test_timeout_guard_refuses_an_execution_not_yet_past_its_deadline(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool, timeout_ms=60_000)
    assert not (await executions.fail(db_pool, claim.execution_id, Owner(deadline_passed=True), "t")).applied
    next_due = await repairs.seconds_until_next_due(db_pool)
    assert next_due is not None and 59 < next_due <= 60


# --------------------------------------------------------------------------- delayed jobs


async def test_delay_and_run_at_set_when_the_first_attempt_is_due(db_pool: asyncpg.Pool) -> None:
    delayed = await submit(db_pool, delay_ms=1500)
    assert delayed.queued is not None and delayed.job.run_at is not None
    lag = delayed.queued.available_at - delayed.job.created_at
    assert dt.timedelta(milliseconds=1499) <= lag <= dt.timedelta(milliseconds=1550)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    scheduled = await submit(db_pool, run_at=at)
    assert scheduled.queued is not None and scheduled.queued.available_at == at
    past = await submit(db_pool, run_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert past.queued is not None and past.queued.available_at == past.job.created_at
    # Not due yet: not in due_queued, and not claimable even if someone pushed it early.
    due = {d.execution_id for d in await repairs.due_queued(db_pool, 100)}
    assert delayed.queued.execution_id not in due and past.queued.execution_id in due
    assert await executions.claim(
        db_pool, [delayed.queued.execution_id], worker_id="w", session_id=SESSION, lease_seconds=5
    ) == []
    next_due = await repairs.seconds_until_next_due(db_pool)
    assert next_due is not None and next_due < 1.5


async def test_resubmitting_a_delayed_job_with_its_key_is_idempotent(db_pool: asyncpg.Pool) -> None:
    first = await submit(db_pool, delay_ms=10_000, key="k")
    await asyncio.sleep(0.05)
    again = await submit(db_pool, delay_ms=10_000, key="k")
    assert again.deduplicated and again.job.job_id == first.job.job_id


# --------------------------------------------------------------------------- dead letters


async def dead_letter(pool: asyncpg.Pool, job_type: str = "work", attempts: int = 1) -> uuid.UUID:
    submitted = await submit(pool, job_type=job_type, max_attempts=attempts)
    job_id = submitted.job.job_id
    for _ in range(attempts):
        (queued,) = await pool.fetch("SELECT execution_id FROM executions WHERE job_id = $1 AND status = 1", job_id)
        (claim,) = await executions.claim(
            pool, [queued["execution_id"]], worker_id="w1", session_id=SESSION, lease_seconds=30
        )
        assert (await executions.fail(pool, claim.execution_id, WORKER, "boom")).applied
    assert (await jobs.get(pool, job_id)).status is JobStatus.FAILED
    return job_id


async def test_redrive_gives_a_fresh_budget_and_keeps_history(db_pool: asyncpg.Pool) -> None:
    job_id = await dead_letter(db_pool, attempts=2)
    outcome = await dead_letters.redrive(db_pool, job_id)
    assert isinstance(outcome, dead_letters.Redriven)
    assert (outcome.job.status, outcome.job.attempts, outcome.job.finished_at) == (JobStatus.PENDING, 3, None)
    assert outcome.job.error_message == "" and outcome.job.attempt_base == 2
    assert await statuses(db_pool, job_id) == [
        ExecutionStatus.FAILED,
        ExecutionStatus.DEAD_LETTERED,
        ExecutionStatus.QUEUED,
    ]
    # Two more attempts (the fresh budget), then dead-lettered again at attempt 4.
    for expected in (JobStatus.PENDING, JobStatus.FAILED):
        (queued,) = await db_pool.fetch("SELECT execution_id FROM executions WHERE job_id = $1 AND status = 1", job_id)
        await executions.claim(db_pool, [queued["execution_id"]], worker_id="w1", session_id=SESSION, lease_seconds=5)
        settled = await executions.fail(db_pool, queued["execution_id"], WORKER, "boom again")
        assert settled.job_status is expected
    history = await rows(db_pool, job_id)
    assert [(r["attempt"], ExecutionStatus(r["status"])) for r in history] == [
        (1, ExecutionStatus.FAILED),
        (2, ExecutionStatus.DEAD_LETTERED),
        (3, ExecutionStatus.FAILED),
        (4, ExecutionStatus.DEAD_LETTERED),
    ]


async def test_only_dead_letters_can_be_redriven(db_pool: asyncpg.Pool) -> None:
    assert await dead_letters.redrive(db_pool, uuid.uuid4()) == "job not found"
    pending = (await submit(db_pool)).job.job_id
    assert "pending" in str(await dead_letters.redrive(db_pool, pending))
    cancelled = (await submit(db_pool)).job.job_id
    await jobs.cancel(db_pool, cancelled, "no")
    assert "canceled" in str(await dead_letters.redrive(db_pool, cancelled))
    assert (await jobs.get(db_pool, cancelled)).status is JobStatus.CANCELED
    done = await claimed(db_pool)
    await settling.succeed(db_pool, done.execution_id, WORKER, b"")
    assert "succeeded" in str(await dead_letters.redrive(db_pool, done.job_id))
    # A FAILED job whose last attempt is not dead-lettered (hand-edited, or a future status).
    odd = await dead_letter(db_pool)
    await db_pool.execute("UPDATE executions SET status = 5 WHERE job_id = $1", odd)
    assert await dead_letters.redrive(db_pool, odd) == "its last attempt was not dead-lettered"


async def test_concurrent_redrives_of_one_job_queue_one_attempt(db_pool: asyncpg.Pool) -> None:
    job_id = await dead_letter(db_pool)
    outcomes = await asyncio.gather(*(dead_letters.redrive(db_pool, job_id) for _ in range(5)))
    assert sum(isinstance(o, dead_letters.Redriven) for o in outcomes) == 1
    assert await statuses(db_pool, job_id) == [ExecutionStatus.DEAD_LETTERED, ExecutionStatus.QUEUED]


async def test_dead_letters_are_listed_by_type_and_time_with_paging(db_pool: asyncpg.Pool) -> None:
    ids = [await dead_letter(db_pool, "mail" if i % 2 else "sms") for i in range(6)]
    await submit(db_pool, job_type="mail")  # pending: not a dead letter
    everything, token = await dead_letters.list_dead_letters(db_pool, DeadLetterFilter(), page_size=10, after=None)
    assert [d.job.job_id for d in everything] == ids[::-1] and token is None
    assert all(d.execution.status is ExecutionStatus.DEAD_LETTERED for d in everything)
    mail, _ = await dead_letters.list_dead_letters(
        db_pool, DeadLetterFilter(job_type="mail"), page_size=10, after=None
    )
    assert [d.job.job_id for d in mail] == [ids[5], ids[3], ids[1]]
    pivot = everything[2].job.finished_at  # ids[3]
    assert pivot is not None
    since, _ = await dead_letters.list_dead_letters(db_pool, DeadLetterFilter(since=pivot), page_size=10, after=None)
    assert [d.job.job_id for d in since] == [ids[5], ids[4], ids[3]]
    until, _ = await dead_letters.list_dead_letters(db_pool, DeadLetterFilter(until=pivot), page_size=10, after=None)
    assert [d.job.job_id for d in until] == [ids[2], ids[1], ids[0]]
    seen: list[uuid.UUID] = []
    token = None
    while True:
        page, token = await dead_letters.list_dead_letters(db_pool, DeadLetterFilter(), page_size=4, after=token)
        seen += [d.job.job_id for d in page]
        if token is None:
            break
    assert seen == ids[::-1]
    assert await dead_letters.matching(db_pool, DeadLetterFilter(job_type="sms"), 2) == [ids[0], ids[2]]


# --------------------------------------------------------------------------- fencing


async def test_epochs_only_grow_even_when_redis_restarts_its_counter(db_pool: asyncpg.Pool) -> None:
    assert await fence.open_term(db_pool, 5) == 5
    assert await fence.open_term(db_pool, 9) == 9
    assert await fence.open_term(db_pool, 1) == 10  # Redis lost its counter: still newer
    assert await fence.current(db_pool) == 10


async def test_a_stale_epoch_changes_nothing(db_pool: asyncpg.Pool) -> None:
    claim = await claimed(db_pool)
    await expire(db_pool, claim.execution_id)
    old = await fence.open_term(db_pool, 1)
    new = await fence.open_term(db_pool, 2)
    with pytest.raises(Fenced):
        await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired", epoch=old)
    with pytest.raises(Fenced):
        await repairs.cancel_orphans(db_pool, epoch=old)
    with pytest.raises(Fenced):
        await workers.mark_silent_offline(db_pool, 0, epoch=old)
    assert await statuses(db_pool, claim.job_id) == [ExecutionStatus.CLAIMED]
    assert (await executions.fail(db_pool, claim.execution_id, SCHEDULER, "lease expired", epoch=new)).applied


async def test_a_new_term_waits_for_the_old_leaders_transaction(db_pool: asyncpg.Pool) -> None:
    old = await fence.open_term(db_pool, 1)
    async with db_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await fence.check(conn, old)  # the old leader is mid-transaction
        opening = asyncio.create_task(fence.open_term(db_pool, 2))
        await asyncio.sleep(0.2)
        assert not opening.done(), "the newer term must wait until the older write commits"
        await tx.commit()
    assert await opening == 2
    async with db_pool.acquire() as conn, conn.transaction():
        with pytest.raises(Fenced):
            await fence.check(conn, old)


def _numbers(predicate: str) -> set[int]:
    return {int(n) for n in re.findall(r"\b\d+\b", predicate)}


async def test_partial_indexes_cover_the_named_guards(db_pool: asyncpg.Pool) -> None:
    # The migrations spell their predicates in numbers (a migration is history, never edited);
    # this keeps them equal to the sets the statements use.
    expected = {
        "executions_queued_idx": EXECUTION_CLAIMABLE,
        "executions_owned_lease_idx": EXECUTION_OWNED,
        "executions_owned_session_idx": EXECUTION_OWNED,
        "executions_owned_deadline_idx": EXECUTION_OWNED,
        "jobs_dead_letters_idx": {JOB_REDRIVE_SOURCE},
    }
    rows = await db_pool.fetch(
        "SELECT indexname, pg_get_expr(i.indpred, i.indrelid) AS predicate FROM pg_indexes p"
        " JOIN pg_class c ON c.relname = p.indexname JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE p.indexname = ANY($1::text[])",
        list(expected),
    )
    predicates = {r["indexname"]: r["predicate"] for r in rows}
    assert set(predicates) == set(expected)
    for name, statuses in expected.items():
        assert _numbers(predicates[name].split("deadline_at")[0]) == {int(s) for s in statuses}, name


@pytest.mark.parametrize(
    ("statement", "types", "call", "index"),
    [
        # What a lost stream's release reads (executions.release_owned).
        (f"{executions._OWNED_ROWS} AND session_id = $1", "uuid", f"'{SESSION}'", "executions_owned_session_idx"),
        (repairs._EXPIRED, "int", "10", "executions_owned_"),  # any index of the owned set
        (repairs._DUE, "int, timestamptz, uuid", "10, NULL, NULL", "executions_queued_idx"),
    ],
)
async def test_a_generic_plan_still_uses_the_partial_index(
    db_pool: asyncpg.Pool, statement: str, types: str, call: str, index: str
) -> None:
    # Why the guards are constants, not parameters: the generic plan of a prepared statement
    # can prove that a literal set implies an index predicate, never that a `$n` array does.
    async with db_pool.acquire() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
        await conn.execute(f"PREPARE probe({types}) AS {statement}")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE probe({call})"))
        await conn.execute("DEALLOCATE probe; RESET plan_cache_mode; RESET enable_seqscan")
    assert index in plan and "Seq Scan" not in plan, plan
