"""A worker's reports applied through the statements the gateway uses (store.settlements, store.heartbeats).

Invariant: tests settle, start and renew executions only through the production path, so a
race or guard they prove is the one a real stream's results go through.
"""

from __future__ import annotations

import uuid

import asyncpg

from dispatchd.platform.states import WorkerStatus
from dispatchd.platform.store import heartbeats, settlements
from dispatchd.platform.store.executions import Owner
from dispatchd.platform.store.heartbeats import Beat, Pulse
from dispatchd.platform.store.rows import Settlement
from dispatchd.platform.store.settlements import Finished, Started


async def succeed(pool: asyncpg.Pool, execution_id: uuid.UUID, owner: Owner, result: bytes) -> Settlement:
    """A success from the stream `owner` names (worker and session; its claim token when set)."""
    assert owner.worker_id is not None and owner.session_id is not None, "a result comes from a stream"
    report = Finished(execution_id, owner.worker_id, owner.session_id, True, result, claim_token=owner.claim_token)
    async with pool.acquire() as conn:
        (settled,) = await settlements.succeed_all(conn, [report])
    return settled


async def start(pool: asyncpg.Pool, execution_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """A start notice from the stream `session_id`; whether it applied."""
    async with pool.acquire() as conn, conn.transaction():
        (applied,) = (await settlements.apply(conn, [Started(execution_id, session_id)], [])).ran
    return applied


async def beat(
    pool: asyncpg.Pool,
    worker_id: str,
    session_id: uuid.UUID,
    lease_seconds: float,
    listed: tuple[uuid.UUID, ...] | None = None,
) -> Pulse:
    """A heartbeat of a registered stream (listing what it runs, or not); what it renewed."""
    beats = [Beat(worker_id, session_id, int(WorkerStatus.READY), listed)]
    (pulse,) = await heartbeats.apply(pool, beats, lease_seconds)
    assert pulse is not None, "the stream is registered and current"
    return pulse
