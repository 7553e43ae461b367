"""Fencing of the scheduler leader's Postgres writes by its epoch.

The Redis leader lease says who *should* lead; it cannot stop a deposed leader (paused by
GC, a slow network, a frozen VM) from finishing a write it started. So the newest leader
records its epoch in the single-row `scheduler_fence` table, and every transaction a leader
runs first takes that row FOR SHARE and checks that no newer epoch is recorded. A newer
leader's `open_term` UPDATE waits for those share locks, so a stale leader's transaction
either commits entirely before the newer term starts, or sees the newer epoch and rolls back:
its writes can never land after a newer leader's.

Epochs only grow, even when Redis loses its data (its epoch counter restarts at 1): a term's
epoch is max(Redis epoch, recorded epoch + 1), and the leader writes it back to Redis.
"""

from __future__ import annotations

import asyncpg


class Fenced(Exception):
    """A newer scheduler leader has opened its term: this leader's write was refused."""

    def __init__(self, mine: int, current: int) -> None:
        super().__init__(f"fenced: epoch {mine} is older than the recorded epoch {current}")
        self.mine = mine
        self.current = current


async def open_term(conn: asyncpg.Connection | asyncpg.Pool, proposed: int) -> int:
    """Record a new leader term; returns its epoch, max(proposed, recorded + 1)."""
    epoch: int = await conn.fetchval(
        "UPDATE scheduler_fence SET epoch = GREATEST(epoch + 1, $1) WHERE id = 1 RETURNING epoch", proposed
    )
    return epoch


async def current(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    epoch: int = await conn.fetchval("SELECT epoch FROM scheduler_fence WHERE id = 1")
    return epoch


async def check(conn: asyncpg.Connection, epoch: int | None) -> None:
    """Inside a transaction: hold the fence (shared) and raise Fenced if `epoch` is stale.

    `epoch` None means an unfenced writer (gateway, control plane): nothing is checked.
    Take it before any other lock, so the lock order stays fence, job, executions.
    """
    if epoch is None:
        return
    recorded: int = await conn.fetchval("SELECT epoch FROM scheduler_fence WHERE id = 1 FOR SHARE")
    if recorded > epoch:
        raise Fenced(epoch, recorded)
