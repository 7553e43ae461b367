"""The leader's schedule loop: fire every due schedule, then sleep until the next fire time.

Invariant: this loop only decides *when* to look; what fires is decided by store.fires in one
fenced transaction per schedule, so two leaders overlapping for a moment, or a leader killed
half-way, can never fire a fire time twice or skip one (the next leader starts from the
recorded cursor). It sleeps until the earliest `next_fire_at` of any unpaused schedule,
bounded by `MAX_SLEEP_SECONDS` (a safety net, not polling), and wakes at once when the control
plane announces a schedule change on the schedules channel (or the subscription reconnects:
a notice may have been lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import asyncpg

from dispatchd.platform import metrics
from dispatchd.platform.config import Settings
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store import fires
from dispatchd.platform.store.fence import Fenced
from dispatchd.platform.subscription import Subscription
from dispatchd.scheduler import metrics as scheduler_metrics

log = logging.getLogger("dispatchd.scheduler.schedules")

DUE_PAGE = 100
MAX_SLEEP_SECONDS = 30.0
ERROR_BACKOFF_SECONDS = 0.5


class ScheduleFirer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, queues: ReadyQueues) -> None:
        self.pool = pool
        self.queues = queues
        self.grace = dt.timedelta(seconds=settings.schedule_grace_seconds)
        self._woken = asyncio.Event()
        self._changes = Subscription(
            queues.client,
            name="schedule changes",
            channels={queues.keys.schedules_channel: lambda _: self._woken.set()},
            on_reconnect=self._woken.set,
        )
        # Fire times fired by this process (all terms): what a drill or a test can read.
        self.fired = 0

    async def lead(self, epoch: int | None = None) -> None:
        """Fire schedules until cancelled; raises Fenced once a newer leader's term is recorded."""
        listener = asyncio.create_task(self._changes.run(), name="schedule-changes")
        try:
            while True:
                self._woken.clear()  # a change announced from here on makes the next sleep short
                try:
                    full = await self._fire_due(epoch)
                    wait = 0.0 if full else await fires.seconds_until_next(self.pool)
                except (asyncio.CancelledError, Fenced):
                    raise
                except Exception as exc:  # PG or Redis down: the cursor is where it was; look again
                    metrics.count_store_error(exc)
                    log.warning("firing schedules failed: %s", exc)
                    wait = ERROR_BACKOFF_SECONDS
                delay = MAX_SLEEP_SECONDS if wait is None else min(max(wait, 0.0), MAX_SLEEP_SECONDS)
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._woken.wait(), delay)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _fire_due(self, epoch: int | None) -> bool:
        """Fire every due schedule of one page; True when the page was full (look again now)."""
        due = await fires.due(self.pool, DUE_PAGE)
        for schedule_id in due:
            fired = await fires.fire(self.pool, schedule_id, epoch=epoch, grace=self.grace)
            if fired is None:
                continue
            self.fired += len(fired.fired)
            scheduler_metrics.count_fires([started for _, started in fired.fired], fired.dropped)
            if fired.queued:
                try:  # committed in Postgres: if Redis misses it, the reconciler queues it
                    await self.queues.enqueue(fired.queued)
                except Exception as exc:
                    metrics.count_store_error(exc, "redis")
                    log.warning("could not push scheduled jobs to their ready queues: %s", exc)
            log.info(
                "schedule fired",
                extra={"fields": {
                    "event": "schedule_fired", "schedule": fired.name, "epoch": epoch,
                    "fire_times": [t.isoformat() for t, _ in fired.fired],
                    "started": [str(s.job_id or s.run_id or s.error) for _, s in fired.fired if s is not None],
                    "dropped": fired.dropped, "next_fire_at": fired.next_fire_at.isoformat(),
                }},
            )
        return len(due) == DUE_PAGE
