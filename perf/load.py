"""How the end-to-end drivers (dispatchd's and Celery's) pace submissions: open loop or saturation.

stdlib only, shared by both sides so they are driven identically. Invariants:
- open loop: submission i is started at start + i/rate whatever earlier ones are doing
  (fixed spacing; a slow reply never delays the next), and every started one is awaited;
- saturation: `window` submitters submit back to back until the deadline, pausing while the
  gate reports the queue's backlog at or above its limit, so the queue never runs dry
  and the backlog left to drain afterwards stays bounded.
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
    """Open while the backlog (polled from `backlog()`) is below `limit`."""

    def __init__(self, backlog: Callable[[], Awaitable[int]], limit: int) -> None:
        self.backlog = backlog
        self.limit = limit
        self.last = 0
        self.closed_polls = 0
        self._open = asyncio.Event()
        self._open.set()

    async def watch(self) -> None:
        while True:
            self.last = await self.backlog()
            if self.last >= self.limit:
                self.closed_polls += 1
                self._open.clear()
            else:
                self._open.set()
            await asyncio.sleep(GATE_POLL_SECONDS)

    async def wait(self) -> None:
        await self._open.wait()


async def saturate(
    window: int,
    seconds: float,
    submit: Callable[[], Awaitable[None]],
    gate: Gate,
    calls: int = 0,
) -> float:
    """`window` submitters back to back for `seconds` (or `calls` submissions, if not 0) behind `gate`.

    Returns the wall seconds spent submitting.
    """
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    left = [calls or -1]  # claimed before submitting, so `calls` is never exceeded

    async def submitter() -> None:
        while time.monotonic() < deadline and left[0] != 0:
            left[0] -= 1
            await gate.wait()
            await submit()

    watcher = asyncio.create_task(gate.watch())
    try:
        await asyncio.gather(*(submitter() for _ in range(window)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return time.monotonic() - started
