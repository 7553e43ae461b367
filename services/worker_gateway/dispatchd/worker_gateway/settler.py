"""Group commit of what workers report: start notices and results of every stream of this gateway.

Invariant (besides those of `group_commit`): a batch holds at most one start notice and one
result per execution, and nothing of an execution after its result (that waits for the
next batch), so what a lane sends in order is applied in order. A start notice whose
execution's successful result is in the same batch is folded into it (no RUNNING write;
the attempt's start is its claim, as for a worker that sends none). A batch of successes
alone (the common one) is one statement that commits on its own, under the same locks and
guards as the transaction that start notices and failures take. The Redis
notifications of a batch follow its commit in one pipeline (`Outcomes`), off the path of
the acknowledgements.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import asyncpg

from dispatchd.platform.store import settlements
from dispatchd.platform.store.rows import Settlement
from dispatchd.platform.store.settlements import Finished, Started
from dispatchd.worker_gateway.group_commit import GroupCommit, Waiter, resolve
from dispatchd.worker_gateway.outcomes import Outcomes

MAX_BATCH = 256


# A start notice's future holds whether it applied; a result's, its Settlement.
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

    def waiters(self) -> list[Waiter]:
        return [*self.start_waiters, *self.finish_waiters, *(waiter for _, _, waiter in self.folded)]

    def singles(self) -> list[_Batch]:
        """Batches of one report, each execution's start notice before its result."""
        folded = {index: (start, waiter) for index, start, waiter in self.folded}
        singles = []
        for report, waiter in zip(self.started, self.start_waiters, strict=True):
            singles.append(_Batch(started=[report], start_waiters=[waiter]))
        for index, (result, waiter) in enumerate(zip(self.finished, self.finish_waiters, strict=True)):
            if index in folded:
                start, start_waiter = folded[index]
                singles.append(_Batch(started=[start], start_waiters=[start_waiter]))
            singles.append(_Batch(finished=[result], finish_waiters=[waiter]))
        return singles


class Settler(GroupCommit[Report, _Batch, settlements.Applied]):
    def __init__(self, pool: asyncpg.Pool, outcomes: Outcomes, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(pool, max_batch)
        self.outcomes = outcomes
        self._announcing: set[asyncio.Task[None]] = set()

    def start(self, report: Started) -> asyncio.Future[bool]:
        """Queue a start notice now (in the caller's order); the future says whether it applied."""
        return self._queue(report)

    def finish(self, report: Finished) -> asyncio.Future[Settlement]:
        """Queue a result now (in the caller's order); the future holds its Settlement."""
        return self._queue(report)

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

    def _atomic(self, batch: _Batch) -> bool:
        # Successes alone (the common batch: start notices folded or already applied) go in
        # one statement; start notices and failures (retries, dead letters) take the transaction.
        return not batch.started and all(f.success for f in batch.finished)

    async def _apply(self, conn: asyncpg.Connection, batch: _Batch) -> settlements.Applied:
        if self._atomic(batch):
            return settlements.Applied([], await settlements.succeed_all(conn, batch.finished), [])
        return await settlements.apply(conn, batch.started, batch.finished)

    def _answer(self, batch: _Batch, outcome: settlements.Applied) -> None:
        ran, settled = outcome.ran, outcome.settlements
        for future, applied in zip(batch.start_waiters, ran, strict=True):
            resolve(future, applied)
        for future, settlement in zip(batch.finish_waiters, settled, strict=True):
            resolve(future, settlement)
        for index, _, future in batch.folded:
            resolve(future, settled[index].applied)
        task = asyncio.create_task(self.outcomes.announce(settled, outcome.began))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)
