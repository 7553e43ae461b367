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
from collections.abc import Iterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from dispatchd.platform.store import jobs
from dispatchd.platform.store.rows import JobRow

log = logging.getLogger("dispatchd.control_plane.waiters")

# How often a waiter re-reads Postgres while the subscription is down.
DEGRADED_RECHECK_SECONDS = 1.0


class JobWaiters:
    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        *,
        keepalive_seconds: float = 15.0,
        min_backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._channel = channel
        self._keepalive = keepalive_seconds
        self._min_backoff = min_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._backoff = min_backoff_seconds
        self._futures: dict[str, set[asyncio.Future[None]]] = {}
        # True only while the subscription is confirmed; until then no event can be trusted.
        self.subscribed = False
        self.closing = False

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next event for this job (or by a wake-all)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(job_id, set()).add(future)
        try:
            yield future
        finally:
            waiting = self._futures.get(job_id)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._futures[job_id]

    def waiting(self) -> int:
        return sum(len(s) for s in self._futures.values())

    def wake(self, job_id: str) -> None:
        for future in self._futures.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        for job_id in list(self._futures):
            self.wake(job_id)

    async def close(self) -> None:
        """Shutdown: waiting calls return what they have instead of holding the server open."""
        self.closing = True
        self.wake_all()

    def _dispatch(self, data: Any) -> None:
        try:
            event = json.loads(data)
            job_id = str(event["job_id"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring malformed job event %r: %s", data, exc)
            return
        self.wake(job_id)

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the subscription alive until `stopping` is set; never returns early."""
        while not stopping.is_set():
            try:
                await self._listen(stopping)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means: reconnect after a pause
                if self.subscribed:
                    log.warning("job event subscription lost: %s", exc)
                else:
                    log.debug("job event subscription failed: %s", exc)
            self.subscribed = False
            # Events may have been missed: let every waiter look at Postgres again.
            self.wake_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
        self.subscribed = False

    async def _listen(self, stopping: asyncio.Event) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            awaiting_pong = False
            while not stopping.is_set():
                message = await pubsub.get_message(timeout=self._keepalive)
                if message is None:
                    # A half-open TCP connection never errors on read; a ping that goes
                    # unanswered for a whole keepalive period exposes it.
                    if awaiting_pong:
                        raise ConnectionError("no reply to the keepalive ping")
                    await pubsub.ping()
                    awaiting_pong = True
                    continue
                awaiting_pong = False
                kind = message.get("type")
                if kind == "subscribe":
                    # Also sent after redis-py reconnects on its own: anything published
                    # while it was away is lost, so everyone re-reads.
                    if not self.subscribed:
                        log.info("subscribed to job events on %s", self._channel)
                    self.subscribed = True
                    self._backoff = self._min_backoff
                    self.wake_all()
                elif kind == "message":
                    self._dispatch(message.get("data"))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


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
