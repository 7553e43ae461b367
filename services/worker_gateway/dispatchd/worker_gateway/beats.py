"""Group commit of the heartbeats of every stream of this gateway.

Invariant (besides those of `group_commit`): the heartbeats that arrive together are
recorded, and their leases renewed, by one statement (`store.heartbeats`); a batch holds at
most one heartbeat per stream (a second waits for the next batch), and each caller learns
its own stream's outcome: the renewals, or that the stream was superseded.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import asyncpg

from dispatchd.platform.store import heartbeats
from dispatchd.platform.store.heartbeats import Beat, Pulse
from dispatchd.worker_gateway.group_commit import GroupCommit, Waiter, resolve

MAX_BATCH = 512


@dataclass(eq=False)
class _Batch:
    beats: list[Beat] = field(default_factory=list)
    callers: list[Waiter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.beats)

    def waiters(self) -> list[Waiter]:
        return self.callers

    def singles(self) -> list[_Batch]:
        return [_Batch([beat], [waiter]) for beat, waiter in zip(self.beats, self.callers, strict=True)]


class Beats(GroupCommit[Beat, _Batch, list[Pulse | None]]):
    one_statement = True

    def __init__(self, pool: asyncpg.Pool, lease_seconds: float, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(pool, max_batch)
        self.lease_seconds = lease_seconds

    def beat(self, beat: Beat) -> asyncio.Future[Pulse | None]:
        """Queue a heartbeat; the future holds its Pulse, or None when the stream was superseded."""
        return self._queue(beat)

    def _take(self) -> _Batch:
        batch = _Batch()
        seen: set[uuid.UUID] = set()
        later: list[tuple[Beat, Waiter]] = []
        for beat, waiter in self._pending:
            if len(batch) >= self.max_batch or beat.session_id in seen:
                later.append((beat, waiter))
                continue
            seen.add(beat.session_id)
            batch.beats.append(beat)
            batch.callers.append(waiter)
        self._pending = later
        return batch

    async def _apply(self, conn: asyncpg.Connection, batch: _Batch) -> list[Pulse | None]:
        return await heartbeats.apply(conn, batch.beats, self.lease_seconds)

    def _answer(self, batch: _Batch, outcome: list[Pulse | None]) -> None:
        for waiter, pulse in zip(batch.callers, outcome, strict=True):
            resolve(waiter, pulse)
