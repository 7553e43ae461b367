"""Group commit: callers' items that arrive together are applied in one transaction.

Invariant: a caller is answered only after the transaction that applied its item
committed, and every caller is answered: with its outcome, or with the error that kept its
item from being applied (never left waiting). Items queued within one event-loop turn, and
those queued while the previous batch commits, go into one batch; one batch is applied at
a time, in the order queued (what one caller queues in order is applied in order). A batch
that fails on anything but a lost store is applied again one item at a time, so one bad
value (a DataError) fails only its own caller.

A subclass says how a batch is taken from the queue (`_take`), applied inside the
transaction (`_apply`; or as one statement that commits on its own, when `_atomic` says so)
and answered once committed (`_answer`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any, Generic, Protocol, Self, TypeVar

import asyncpg

from dispatchd.platform.interceptors import STORE_UNAVAILABLE

log = logging.getLogger("dispatchd.gateway.group_commit")

Waiter = asyncio.Future[Any]


class Batch(Protocol):
    def __len__(self) -> int: ...

    def waiters(self) -> list[Waiter]: ...

    def singles(self) -> list[Self]:
        """The batch as batches of one item, in the order they must be applied."""
        ...


Item = TypeVar("Item")
B = TypeVar("B", bound=Batch)
Outcome = TypeVar("Outcome")


class GroupCommit(ABC, Generic[Item, B, Outcome]):
    # True when `_apply` runs one statement, atomic on its own: no BEGIN/COMMIT round trips
    # (a subclass may decide per batch: `_atomic`).
    one_statement = False

    def __init__(self, pool: asyncpg.Pool, max_batch: int) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self._pending: list[tuple[Item, Waiter]] = []
        self._task: asyncio.Task[None] | None = None
        # Committed transactions and the items they applied (tests and profiles read them).
        self.transactions = 0
        self.reports = 0

    @abstractmethod
    def _take(self) -> B:
        """The next batch, taken from the front of `_pending` (what it leaves there waits)."""

    @abstractmethod
    async def _apply(self, conn: asyncpg.Connection, batch: B) -> Outcome:
        """Apply the batch inside the transaction on `conn`."""

    def _atomic(self, batch: B) -> bool:
        """Whether `_apply` runs this batch as one statement, atomic on its own."""
        return self.one_statement

    @abstractmethod
    def _answer(self, batch: B, outcome: Outcome) -> None:
        """Answer every caller of the committed batch."""

    def _queue(self, item: Item) -> Waiter:
        future: Waiter = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            # A new task takes its first step only after the callbacks already scheduled
            # in this loop turn, so what else arrives in the turn still joins the batch;
            # no extra turn of waiting (call_soon first) when nothing is in flight.
            self._task = asyncio.create_task(self._run())
        return future

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._commit(self._take())
        finally:
            self._task = None

    async def _commit(self, batch: B) -> None:
        try:
            async with self.pool.acquire() as conn:
                if self._atomic(batch):
                    outcome = await self._apply(conn, batch)
                else:
                    async with conn.transaction():
                        outcome = await self._apply(conn, batch)
        except asyncio.CancelledError:  # the gateway is stopping
            for waiter in batch.waiters():
                waiter.cancel()
            raise
        except Exception as exc:
            if isinstance(exc, STORE_UNAVAILABLE) or len(batch) == 1:
                for waiter in batch.waiters():
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            log.warning("a batch of %d items failed (%s); applying them one at a time", len(batch), exc)
            for single in batch.singles():
                await self._commit(single)
            return
        self.transactions += 1
        self.reports += len(batch)
        self._answer(batch, outcome)


def resolve(waiter: Waiter, value: object) -> None:
    if not waiter.done():  # its caller may have gone (the stream ended)
        waiter.set_result(value)
