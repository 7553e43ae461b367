"""Group commit of what workers report: start notices and results of every stream of this gateway.

Invariant: a caller's report is acknowledged only after the transaction that applied it
committed, and every caller is answered: with its outcome, or with the error that kept it
from being applied (never left waiting). Reports that arrive within one event-loop turn,
and those that arrive while the previous batch commits, go into one transaction (at most
MAX_BATCH reports; one transaction at a time, so a batch is applied after every report
queued before it: what a lane sends in order is applied in order). A start notice whose
execution's successful result is in the same batch is folded into it (no RUNNING write;
the attempt's start is its claim, as for a worker that sends none). A batch that fails on
anything but a lost store is applied again one report at a time, so one bad value (a
DataError) fails only its own caller. The Redis notifications of a batch follow its commit
in one pipeline (`Outcomes`), off the path of the acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dispatchd.platform.interceptors import STORE_UNAVAILABLE
from dispatchd.platform.store import settlements
from dispatchd.platform.store.rows import Settlement
from dispatchd.platform.store.settlements import Finished, Started
from dispatchd.worker_gateway.outcomes import Outcomes

log = logging.getLogger("dispatchd.gateway.settler")

MAX_BATCH = 256


# A start notice's future holds whether it applied; a result's, its Settlement.
Waiter = asyncio.Future[Any]
Report = Started | Finished


@dataclass(eq=False)
class _Batch:
    started: list[Started] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    start_waiters: list[Waiter] = field(default_factory=list)
    finish_waiters: list[Waiter] = field(default_factory=list)
    # Start notices folded into the result at that index of `finished`.
    folded: list[tuple[int, Started, Waiter]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.started) + len(self.finished) + len(self.folded)

    def add(self, report: Report, waiter: Waiter) -> None:
        if isinstance(report, Started):
            self.started.append(report)
            self.start_waiters.append(waiter)
        else:
            self.finished.append(report)
            self.finish_waiters.append(waiter)

    def fold(self, result: Finished) -> bool:
        """Fold the batch's start notice of `result`'s execution into it (same stream, a success)."""
        for at, start in enumerate(self.started):
            if start.execution_id == result.execution_id and start.session_id == result.session_id and result.success:
                self.folded.append((len(self.finished) - 1, start, self.start_waiters[at]))
                del self.started[at], self.start_waiters[at]
                return True
        return False


class Settler:
    def __init__(self, pool: asyncpg.Pool, outcomes: Outcomes, *, max_batch: int = MAX_BATCH) -> None:
        self.pool = pool
        self.outcomes = outcomes
        self.max_batch = max_batch
        self._pending: list[tuple[Report, Waiter]] = []
        self._task: asyncio.Task[None] | None = None
        self._kicked = False
        self._announcing: set[asyncio.Task[None]] = set()
        # Committed transactions and the reports they applied (tests and profiles read them).
        self.transactions = 0
        self.reports = 0

    def start(self, report: Started) -> asyncio.Future[bool]:
        """Queue a start notice now (in the caller's order); the future says whether it applied."""
        return self._queue(report)

    def finish(self, report: Finished) -> asyncio.Future[Settlement]:
        """Queue a result now (in the caller's order); the future holds its Settlement."""
        return self._queue(report)

    def _queue(self, report: Report) -> Waiter:
        future: Waiter = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._task is None and not self._kicked:
            # Not at once: what else arrives in this loop turn joins the batch.
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._kick)
        return future

    def _kick(self) -> None:
        self._kicked = False
        if self._task is None and self._pending:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._commit(self._take())
        finally:
            self._task = None

    def _take(self) -> _Batch:
        """The next batch: at most one start notice and one result per execution; the rest waits."""
        batch = _Batch()
        seen: set[tuple[type, uuid.UUID]] = set()
        later: list[tuple[Report, Waiter]] = []
        for report, waiter in self._pending:
            key = (type(report), report.execution_id)
            # A report after this execution's result waits for it, as does a second of a kind.
            if len(batch) >= self.max_batch or key in seen or (Finished, report.execution_id) in seen:
                later.append((report, waiter))
                continue
            seen.add(key)
            batch.add(report, waiter)
            if isinstance(report, Finished) and (Started, report.execution_id) in seen:
                batch.fold(report)
        self._pending = later
        return batch

    async def _commit(self, batch: _Batch) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                ran, settled = await settlements.apply(conn, batch.started, batch.finished)
        except asyncio.CancelledError:  # the gateway is stopping
            _cancel_all(batch)
            raise
        except Exception as exc:
            if isinstance(exc, STORE_UNAVAILABLE) or len(batch) == 1:
                _fail_all(batch, exc)
                return
            log.warning("a batch of %d reports failed (%s); applying them one at a time", len(batch), exc)
            for single in _singles(batch):
                await self._commit(single)
            return
        self.transactions += 1
        self.reports += len(batch)
        for future, applied in zip(batch.start_waiters, ran, strict=True):
            _resolve(future, applied)
        for future, settlement in zip(batch.finish_waiters, settled, strict=True):
            _resolve(future, settlement)
        for index, _, future in batch.folded:
            _resolve(future, settled[index].applied)
        task = asyncio.create_task(self.outcomes.announce(settled))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)


def _singles(batch: _Batch) -> list[_Batch]:
    """The batch as batches of one report, each execution's start notice before its result."""
    folded = {index: (start, waiter) for index, start, waiter in batch.folded}
    singles = []
    for report, waiter in zip(batch.started, batch.start_waiters, strict=True):
        singles.append(_Batch(started=[report], start_waiters=[waiter]))
    for index, (result, waiter) in enumerate(zip(batch.finished, batch.finish_waiters, strict=True)):
        if index in folded:
            start, start_waiter = folded[index]
            singles.append(_Batch(started=[start], start_waiters=[start_waiter]))
        singles.append(_Batch(finished=[result], finish_waiters=[waiter]))
    return singles


def _waiters(batch: _Batch) -> list[Waiter]:
    return [*batch.start_waiters, *batch.finish_waiters, *(waiter for _, _, waiter in batch.folded)]


def _resolve(waiter: Waiter, value: object) -> None:
    if not waiter.done():  # its caller may have gone (the stream ended)
        waiter.set_result(value)


def _fail_all(batch: _Batch, exc: BaseException) -> None:
    for waiter in _waiters(batch):
        if not waiter.done():
            waiter.set_exception(exc)


def _cancel_all(batch: _Batch) -> None:
    for waiter in _waiters(batch):
        waiter.cancel()
