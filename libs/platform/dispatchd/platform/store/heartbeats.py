"""Heartbeats of many worker streams, applied in one statement.

Invariant: a heartbeat counts only from the worker's current stream (the session its
workers row names); for such a stream it records the heartbeat and renews the leases the
stream owns: all of them, or, when the worker lists what it runs, only the listed ones it
really owns. A superseded stream's heartbeat changes nothing. Locks follow the order of
`store.executions`: the workers rows (in worker_id order, as `store.workers` marks silent
workers offline), then the renewed executions in execution_id order, as a settlement
batch or a claim takes them; no job row is locked, so a heartbeat batch cannot deadlock
with a settlement, a claim, a cancel or a repair.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.states import EXECUTION_OWNED
from dispatchd.platform.store.guards import one_of


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat of the stream `session_id`; `listed` is None unless the worker lists what it runs."""

    worker_id: str
    session_id: uuid.UUID
    status: int
    listed: tuple[uuid.UUID, ...] | None = None


@dataclass(frozen=True, slots=True)
class Pulse:
    """What a current stream's heartbeat did; `owned` (read only for a listing beat) is what the stream owns."""

    renewed: int
    owned: frozenset[uuid.UUID] | None = None


_BEAT = f"""
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::int[], $4::bool[]) AS i(worker_id, session_id, status, lists)
), w AS (
    SELECT k.worker_id, i.session_id, i.status, i.lists FROM workers k
    JOIN i ON k.worker_id = i.worker_id AND k.session_id = i.session_id
    ORDER BY k.worker_id FOR UPDATE OF k
), h AS (
    UPDATE workers SET last_heartbeat_at = clock_timestamp(), status = w.status
    FROM w WHERE workers.worker_id = w.worker_id
), l AS (
    SELECT e.execution_id FROM executions e JOIN w ON e.session_id = w.session_id
    WHERE {one_of("e.status", EXECUTION_OWNED)}
      AND (NOT w.lists OR (e.session_id, e.execution_id) IN (SELECT * FROM unnest($5::uuid[], $6::uuid[])))
    ORDER BY e.execution_id FOR UPDATE OF e
), r AS (
    UPDATE executions e SET lease_expires_at = clock_timestamp() + make_interval(secs => $7)
    FROM l WHERE e.execution_id = l.execution_id
    RETURNING e.session_id
), n AS (
    SELECT session_id, count(*) AS renewed FROM r GROUP BY session_id
), o AS (
    SELECT session_id, array_agg(execution_id) AS owned FROM executions
    WHERE session_id IN (SELECT session_id FROM w WHERE lists) AND {one_of("status", EXECUTION_OWNED)}
    GROUP BY session_id
)
SELECT w.session_id, w.lists, COALESCE(n.renewed, 0) AS renewed, o.owned
FROM w LEFT JOIN n ON n.session_id = w.session_id LEFT JOIN o ON o.session_id = w.session_id
"""


async def apply(
    conn: asyncpg.Connection | asyncpg.Pool, beats: Sequence[Beat], lease_seconds: float
) -> list[Pulse | None]:
    """Apply the heartbeats (at most one per stream); each one's Pulse, or None for a superseded stream."""
    pairs = [(b.session_id, execution_id) for b in beats if b.listed for execution_id in b.listed]
    rows = await conn.fetch(
        _BEAT,
        [b.worker_id for b in beats],
        [b.session_id for b in beats],
        [b.status for b in beats],
        [b.listed is not None for b in beats],
        [session_id for session_id, _ in pairs],
        [execution_id for _, execution_id in pairs],
        lease_seconds,
    )
    pulses = {r["session_id"]: Pulse(r["renewed"], frozenset(r["owned"] or ()) if r["lists"] else None) for r in rows}
    return [pulses.get(b.session_id) for b in beats]
