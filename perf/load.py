"""How the end-to-end drivers (dispatchd's and Celery's) pace submissions: open loop or saturation.

stdlib only, shared by both sides so they are driven identically. Invariants:
- open loop: submission i is started at start + i/rate whatever earlier ones are doing
  (fixed spacing; a slow reply never delays the next), and every started one is awaited;
- saturation: `window` submitters submit back to back until the deadline, each call admitted
  by a gate that keeps the queue's backlog (read, plus what was sent since) under its limit,
  so the queue never runs dry and never holds more than about the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

GATE_POLL_SECONDS = 0.05


async def open_loop(rate: float, seconds: float, submit: Callable[[], Awaitable[None]]) -> float:
    """Start `submit()` every 1/rate s for `seconds`; the wall seconds until all of them returned."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending: set[asyncio.Task[None]] = set()
    count = int(rate * seconds)
    for i in range(count):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(submit())
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return loop.time() - started


class Gate:
    """Admits a submission of n jobs while the queue, as last read plus what was sent since, stays below `limit`.

    A reading of `backlog()` alone lags: every submitter that finds the gate open would send
    its call before the next reading closes it, so the queue would overshoot by `window` calls
    (64 batches of 200 jobs = 12,800 jobs, tens of seconds of work on a slow machine, which
    then shows up as submit -> claim latency). So the gate counts the jobs it admitted: the
    estimate is the last reading plus every job in flight when that reading began plus every
    job admitted since. Jobs that committed before the reading's snapshot are counted twice at
    worst, so the estimate never undercounts and the queue stays within `limit` plus one call.
    """

    def __init__(self, backlog: Callable[[], Awaitable[int]], limit: int) -> None:
        self.backlog = backlog
        self.limit = limit
        self.last: int | None = None  # no reading yet: nothing is admitted before the first
        self._admitted = 0  # jobs admitted, ever
        self._in_flight = 0  # admitted and not yet answered
        self._uncounted = 0  # jobs the last reading may not include: in flight when it began
        self._mark = 0  # `_admitted` when the last reading began
        self._read = asyncio.Condition()

    def _estimate(self) -> int:
        assert self.last is not None
        return self.last + self._uncounted + self._admitted - self._mark

    def _fits(self, jobs: int) -> bool:
        if self.last is None:
            return False
        estimate = self._estimate()
        return estimate <= 0 or estimate + jobs <= self.limit

    async def watch(self) -> None:
        while True:
            mark, uncounted = self._admitted, self._in_flight
            reading = await self.backlog()
            async with self._read:
                self.last, self._mark, self._uncounted = reading, mark, uncounted
                self._read.notify_all()
            await asyncio.sleep(GATE_POLL_SECONDS)

    async def wait(self, jobs: int = 1) -> None:
        """Until `jobs` more fit under the limit (always admitted when nothing is queued or sent)."""
        async with self._read:
            await self._read.wait_for(lambda: self._fits(jobs))
            self._admitted += jobs
            self._in_flight += jobs

    def answered(self, jobs: int = 1) -> None:
        """A call admitted by `wait(jobs)` was answered (its jobs are queued, or were refused)."""
        self._in_flight -= jobs


async def saturate(
    window: int,
    seconds: float,
    submit: Callable[[], Awaitable[None]],
    gate: Gate,
    calls: int = 0,
    per_call: int = 1,
) -> float:
    """`window` submitters back to back for `seconds` (or `calls` submissions, if not 0) behind `gate`.

    Each submission carries `per_call` jobs and is admitted by the gate for that many.

    Returns the wall seconds spent submitting.
    """
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    left = [calls or -1]  # claimed before submitting, so `calls` is never exceeded

    async def submitter() -> None:
        while time.monotonic() < deadline and left[0] != 0:
            left[0] -= 1
            await gate.wait(per_call)
            try:
                await submit()
            finally:
                gate.answered(per_call)

    watcher = asyncio.create_task(gate.watch())
    try:
        await asyncio.gather(*(submitter() for _ in range(window)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return time.monotonic() - started
