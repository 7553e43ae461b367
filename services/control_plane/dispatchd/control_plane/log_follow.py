"""FollowLogs support: stream an execution's (or a job's) stored lines, then new ones as they are stored.

Push-driven: the gateway publishes one notice per window naming the executions whose lines
it stored (worker_gateway.log_notices), and a job event (a retry, a start, the end) names
the job; both arrive on the process's one subscription and wake the followers registered
under those ids. A follower registers *before* it reads, so a notice published between its
read and its wait still wakes it. Notices are lossy, so a follower also re-reads every
`safety_seconds` (3 s; 1 s while the subscription is down) — a safety net, not a poll loop.

The stream ends when the target is terminal and drained: terminal is read *before* the
lines, so every line committed before it is in that read; one more read `grace_seconds`
later catches a line whose INSERT started while the execution was still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg

from dispatchd.control_plane.wakeups import Wakeups
from dispatchd.platform.job_events import JobEvent
from dispatchd.platform.store import logs
from dispatchd.platform.store.logs import LogRow, LogTarget

log = logging.getLogger("dispatchd.control_plane.log_follow")

SAFETY_SECONDS = 3.0
DEGRADED_SECONDS = 1.0
GRACE_SECONDS = 0.5


class LogWakeups(Wakeups):
    """Followers' futures by execution id and job id, resolved by notices and job events."""

    def __init__(self, subscribed: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self.subscribed = subscribed
        self.closing = False

    def close(self) -> None:
        """Shutdown: followers end their streams now (a client resumes from its last token)."""
        self.closing = True
        self.wake_all()

    def following(self) -> bool:
        return self.waiting() > 0

    def on_notice(self, data: str) -> None:
        try:
            ids = json.loads(data)
            keys = [str(i) for i in ids] if isinstance(ids, list) else []
        except ValueError as exc:
            log.warning("ignoring a malformed log notice %r: %s", data[:200], exc)
            return
        for key in keys:
            self.wake(key)

    def on_job_event(self, event: JobEvent) -> None:
        self.wake(event.job_id)


async def follow(
    pool: asyncpg.Pool,
    wakeups: LogWakeups,
    of: LogTarget,
    after: int,
    page_size: int,
    *,
    safety_seconds: float = SAFETY_SECONDS,
    grace_seconds: float = GRACE_SECONDS,
) -> AsyncIterator[list[LogRow]]:
    """Pages of lines after log id `after` until `of` is terminal and drained (module docstring)."""
    keys = [str(of.job_id if of.execution_id is None else of.execution_id)]
    while True:
        with wakeups.watch_keys(keys) as woken:
            done, executions = await logs.state(pool, of)
            known = [*keys[:1], *(str(e) for e in executions)]
            rows, _ = await logs.page(pool, of, after, page_size)
            if rows:
                yield rows
                after = rows[-1].log_id
            if rows or known != keys:
                keys = known  # re-register under new attempts before waiting
                continue
            if done:
                break
            if wakeups.closing:  # shutting down: what was stored is sent; the client resumes later
                return
            timeout = safety_seconds if wakeups.subscribed() else min(safety_seconds, DEGRADED_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken, timeout)
    await asyncio.sleep(grace_seconds)
    while rows := (await logs.page(pool, of, after, page_size))[0]:
        yield rows
        after = rows[-1].log_id
