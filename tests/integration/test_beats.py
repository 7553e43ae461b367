"""Group commit of heartbeats (worker_gateway.beats via Messages) on real Postgres and Redis.

Heartbeats of many streams that arrive together commit in one statement, and each stream
gets its own acknowledgement: its renewals, its list reconciled, or, for a superseded
stream, STALE and the stream ended. A heartbeat batch and a settlement batch over the
same executions never deadlock (they lock in one order).
"""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import grpc
import pytest
import redis.asyncio

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import ExecutionStatus
from dispatchd.platform.store import executions, workers
from dispatchd.platform.store.rows import Claim
from dispatchd.platform.store.settlements import Finished
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.dispatcher import Dispatcher
from dispatchd.worker_gateway.messages import Messages
from dispatchd.worker_gateway.outcomes import Outcomes
from dispatchd.worker_gateway.sessions import Session
from tests.support.submissions import PREFIX, first_attempt, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LEASE_SECONDS = 600.0


@pytest.fixture
def messages(db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> Messages:
    queues = ReadyQueues(redis_client, PREFIX)
    dispatcher = Dispatcher(db_pool, queues, LEASE_SECONDS)
    return Messages(db_pool, dispatcher, Outcomes(queues), lease_seconds=LEASE_SECONDS, max_payload_bytes=1 << 20)


async def registered(pool: asyncpg.Pool, worker_id: str) -> Session:
    session = Session(worker_id=worker_id, capabilities=("test",), max_concurrency=10, labels={})
    await workers.register(
        pool,
        worker_id=worker_id,
        session_id=session.session_id,
        gateway_id="g",
        capabilities=["test"],
        max_concurrency=10,
        labels={},
    )
    return session


async def claimed(pool: asyncpg.Pool, session: Session) -> Claim:
    ref = first_attempt(await submit(pool))
    (claim,) = await executions.claim(
        pool, [ref.execution_id], worker_id=session.worker_id, session_id=session.session_id, lease_seconds=1
    )
    session.inflight.add(claim.execution_id)
    return claim


def beat(running: list[uuid.UUID] | None = None) -> pb.WorkerHeartbeat:
    message = pb.WorkerHeartbeat(status=pb.WORKER_STATUS_BUSY)
    if running is not None:
        message.running_execution_ids.extend(str(r) for r in running)
        message.lists_running = True
    return message


def sent(session: Session) -> list[pb.ConnectResponse]:
    return [m for m in session.outbox._items if m is not None]


def heartbeat_ack(session: Session) -> pb.WorkerAck:
    (ack,) = [m.ack for m in sent(session) if m.HasField("ack") and m.ack.kind == "heartbeat"]
    return ack


async def lease_of(pool: asyncpg.Pool, claim: Claim) -> float:
    seconds: float = await pool.fetchval(
        "SELECT EXTRACT(EPOCH FROM lease_expires_at - clock_timestamp()) FROM executions WHERE execution_id = $1",
        claim.execution_id,
    )
    return seconds


async def test_heartbeats_of_many_streams_commit_together_and_each_is_acked(
    db_pool: asyncpg.Pool, messages: Messages
) -> None:
    sessions = [await registered(db_pool, f"w{i}") for i in range(20)]
    owned = {s.session_id: [await claimed(db_pool, s) for _ in range(i % 3)] for i, s in enumerate(sessions)}
    await db_pool.execute("UPDATE workers SET last_heartbeat_at = '2000-01-01'")

    # Even streams list what they run (all of it), odd ones do not: both kinds share the batch.
    await asyncio.gather(
        *(
            messages.heartbeat(s, beat([c.execution_id for c in owned[s.session_id]] if i % 2 == 0 else None))
            for i, s in enumerate(sessions)
        )
    )
    assert messages.beats.transactions == 1 and messages.beats.reports == 20
    for s in sessions:
        ack = heartbeat_ack(s)
        assert ack.status == pb.ACK_STATUS_ACCEPTED
        assert ack.message == f"renewed {len(owned[s.session_id])} lease(s)"
        assert not s.closed
        for claim in owned[s.session_id]:
            assert await lease_of(db_pool, claim) > LEASE_SECONDS - 60
    stale = await db_pool.fetchval("SELECT count(*) FROM workers WHERE last_heartbeat_at < '2001-01-01'")
    assert stale == 0


async def test_a_superseded_stream_in_a_batch_is_ended_and_renews_nothing(
    db_pool: asyncpg.Pool, messages: Messages
) -> None:
    old = await registered(db_pool, "w1")
    claim = await claimed(db_pool, old)
    newer = await registered(db_pool, "w1")  # the worker registered again (elsewhere)
    neighbour = await registered(db_pool, "w2")
    mine = await claimed(db_pool, neighbour)

    await asyncio.gather(messages.heartbeat(old, beat()), messages.heartbeat(neighbour, beat([mine.execution_id])))
    assert messages.beats.transactions == 1
    assert heartbeat_ack(old).status == pb.ACK_STATUS_STALE
    assert old.closed and old.end.code == grpc.StatusCode.ABORTED
    assert await lease_of(db_pool, claim) < 2  # not renewed by the superseded stream
    assert heartbeat_ack(neighbour).message == "renewed 1 lease(s)"
    assert await lease_of(db_pool, mine) > LEASE_SECONDS - 60
    assert not newer.closed


async def test_a_listing_heartbeat_in_a_batch_still_reconciles(db_pool: asyncpg.Pool, messages: Messages) -> None:
    messages.heartbeat_seconds = 0.0  # a missing execution is released at its first miss
    session = await registered(db_pool, "w1")
    kept, forgotten = await claimed(db_pool, session), await claimed(db_pool, session)
    foreign = uuid.uuid4()
    other = await registered(db_pool, "w2")

    await asyncio.gather(
        messages.heartbeat(session, beat([kept.execution_id, foreign])), messages.heartbeat(other, beat([]))
    )
    assert messages.beats.transactions == 1
    ack = heartbeat_ack(session)
    assert ack.message == "renewed 1 lease(s); released 1 execution(s) the worker no longer reports"
    cancels = {m.cancel.execution_id for m in sent(session) if m.HasField("cancel")}
    assert cancels == {str(foreign), str(forgotten.execution_id)}
    assert session.inflight == {kept.execution_id}
    status = await db_pool.fetchval("SELECT status FROM executions WHERE execution_id = $1", forgotten.execution_id)
    assert ExecutionStatus(status) is ExecutionStatus.FAILED
    assert heartbeat_ack(other).message == "renewed 0 lease(s)"


async def test_heartbeat_and_settlement_batches_over_the_same_executions_never_deadlock(
    db_pool: asyncpg.Pool, messages: Messages
) -> None:
    sessions = [await registered(db_pool, f"w{i}") for i in range(8)]
    claims = [(s, await claimed(db_pool, s)) for s in sessions for _ in range(12)]
    rng = random.Random(9)
    rng.shuffle(claims)
    # Another gateway's heartbeat batch and the scheduler's offline marking run meanwhile.
    other = [await registered(db_pool, f"x{i}") for i in range(8)]
    await db_pool.execute("UPDATE workers SET last_heartbeat_at = '2000-01-01' WHERE worker_id LIKE 'x%'")

    async def settle() -> None:
        pending = []
        for s, c in claims:
            report = Finished(c.execution_id, s.worker_id, s.session_id, rng.random() < 0.8, b"ok", "boom")
            pending.append(messages.settler.finish(report))
            await asyncio.sleep(0)  # results trickle in: many batches interleave with the heartbeats
        assert all(s.applied for s in await asyncio.gather(*pending))

    async def beat_all(rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.gather(*(messages.heartbeat(s, beat()) for s in sessions + other if not s.closed))
            for s in sessions + other:
                s.outbox._items.clear()

    async def offline() -> None:
        for _ in range(20):
            await workers.mark_silent_offline(db_pool, 0.0)

    await asyncio.wait_for(asyncio.gather(settle(), beat_all(20), offline()), 30)
    assert messages.beats.transactions >= 20
    left = await db_pool.fetchval(
        "SELECT count(*) FROM executions WHERE execution_id = ANY($1::uuid[]) AND status IN (2, 3)",
        [c.execution_id for _, c in claims],
    )
    assert left == 0  # every result was applied in the end
