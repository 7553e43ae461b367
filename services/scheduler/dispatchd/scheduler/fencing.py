"""A leadership term as Postgres sees it: the Redis term's epoch, made monotonic and recorded.

The campaign hands `lead` a Term whose epoch comes from a Redis counter. Before the first
repair, the term is opened in Postgres (store.fence.open_term): its fencing epoch becomes
max(Redis epoch, recorded epoch + 1) and is recorded, so from then on every write of an
older leader is refused. If Redis had lost its counter, the counter is raised past the
recorded epoch so later terms keep growing.

When a pass is refused (`Fenced`), some other replica recorded a newer epoch. Usually this
replica lost the lease and the campaign is about to step it down: it waits for that. But a
deposed leader that opened its term late can fence out the rightful holder; so if this
replica can still see its own token on the lease, it opens a new, newer term at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import asyncpg

from dispatchd.platform.store import fence
from dispatchd.platform.store.fence import Fenced
from dispatchd.scheduler import metrics
from dispatchd.scheduler.leader import LeaderLease, Term
from dispatchd.scheduler.reconciler import Reconciler

log = logging.getLogger("dispatchd.scheduler.fencing")


class Leading(Protocol):
    """Work the leader runs under its term's epoch (the reconciler, the schedule firer)."""

    def lead(self, epoch: int | None = None) -> Coroutine[Any, Any, None]: ...


async def _together(works: Sequence[Leading], epoch: int) -> None:
    """Run every work's `lead(epoch)` at once; the first to fail (e.g. Fenced) ends them all."""
    tasks = [asyncio.create_task(work.lead(epoch)) for work in works]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class FencedLeadership:
    def __init__(
        self, pool: asyncpg.Pool, lease: LeaderLease, reconciler: Reconciler, also: Sequence[Leading] = ()
    ) -> None:
        self.pool = pool
        self.lease = lease
        self.reconciler = reconciler
        # More work under the same term (the schedule firer): fenced out together with the reconciler.
        self.also = tuple(also)
        # The Redis term whose Postgres term is open, and that term's fencing epoch.
        self._opened: tuple[Term, int] | None = None

    async def open(self, term: Term) -> int:
        # By identity: every acquire makes a new Term, even one equal to an earlier one
        # (Redis lost its counter and handed out the same epoch to the same token again).
        if self._opened is not None and self._opened[0] is term:
            return self._opened[1]
        epoch = await fence.open_term(self.pool, term.epoch)
        if epoch > term.epoch:
            await self.lease.raise_epoch(epoch)
        self._opened = (term, epoch)
        metrics.EPOCH.set(epoch)
        log.info(
            "opened the fenced term",
            extra={"fields": {"event": "term_opened", "redis_epoch": term.epoch, "epoch": epoch}},
        )
        return epoch

    async def lead(self, term: Term) -> None:
        """The campaign's `lead`: run the reconciler (and `also`) under this term's fencing epoch."""
        epoch = await self.open(term)
        try:
            await _together((self.reconciler, *self.also), epoch)
        except Fenced as exc:
            self._opened = None
            still_ours = await self.lease.holder() == self.lease.token
            log.warning(
                "fenced out by a newer leader",
                extra={"fields": {"event": "fenced", "epoch": exc.mine, "recorded": exc.current, "holder": still_ours}},
            )
            if still_ours:
                return  # the campaign restarts `lead` with this term, which opens a newer one
            # Not the holder any more: stay idle until the campaign steps down (cancels us).
            await asyncio.Event().wait()
