"""WaitJob support: one Redis subscription per process wakes every waiting call.

Whoever makes a job terminal (gateway, scheduler, CancelJob) publishes {"job_id", "status"}
on the job channel. A waiter registers its future *before* reading the job from Postgres,
so an event published between the read and the wait still wakes it. Pub/sub is lossy
across disconnects, so every (re)subscription wakes all waiters to re-read Postgres, and
while the subscription is down waiters re-read on a short timer instead of trusting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import asyncpg
import redis.asyncio as aioredis

from dispatchd.control_plane.wakeups import Wakeups
from dispatchd.platform.store import jobs
from dispatchd.platform.store.rows import JobRow
from dispatchd.platform.subscription import Subscription

log = logging.getLogger("dispatchd.control_plane.waiters")

# How often a waiter re-reads Postgres while the subscription is down.
DEGRADED_RECHECK_SECONDS = 1.0


class JobWaiters(Wakeups):
    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        *,
        keepalive_seconds: float = 15.0,
        min_backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        super().__init__()
        self.closing = False
        # Both a (re)subscription and a loss wake everyone: events may have been missed, and
        # while the subscription is down waiters must move to re-reading on a timer.
        self.subscription = Subscription(
            client,
            name="job events",
            channels={channel: self._dispatch},
            on_reconnect=self.wake_all,
            on_lost=self.wake_all,
            keepalive_seconds=keepalive_seconds,
            min_backoff_seconds=min_backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )

    @property
    def subscribed(self) -> bool:
        """True only while the subscription is confirmed; until then no event can be trusted."""
        return self.subscription.subscribed

    async def run(self) -> None:
        """Keep the subscription alive until cancelled."""
        await self.subscription.run()

    def watch(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Future[None]]:
        """A future resolved by the next event for this job (or by a wake-all)."""
        return self.watch_keys([job_id])

    async def close(self) -> None:
        """Shutdown: waiting calls return what they have instead of holding the server open."""
        self.closing = True
        self.wake_all()

    def _dispatch(self, data: str) -> None:
        try:
            job_id = str(json.loads(data)["job_id"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring malformed job event %r: %s", data[:200], exc)
            return
        self.wake(job_id)


async def wait_for_terminal(
    pool: asyncpg.Pool, waiters: JobWaiters, job_id: uuid.UUID, timeout: float
) -> tuple[JobRow, bool]:
    """The job once terminal, or as it is when `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with waiters.watch(str(job_id)) as woken:
            row = await jobs.get(pool, job_id)
            if jobs.is_terminal(row.status):
                return row, True
            remaining = deadline - loop.time()
            if remaining <= 0 or waiters.closing:
                return row, False
            if not waiters.subscribed:
                remaining = min(remaining, DEGRADED_RECHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken, remaining)
