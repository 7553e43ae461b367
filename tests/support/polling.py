"""Waiting for state that another process writes and cannot notify the test about.

Invariant: the bound is generous (a failure, not a measurement); a test that needs the
figure prints the returned seconds, perf/ is where latencies are asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition", interval: float = 0.02
) -> float:
    """Poll `check()` until it is true; the seconds it took. AssertionError after `timeout`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)
    return loop.time() - started


def wait_until(
    check: Callable[[], bool], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> float:
    """`eventually` for synchronous tests (blocking clients, process logs); the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)
    return time.monotonic() - started
