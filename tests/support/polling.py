"""Waiting for state that another process writes and cannot notify the test about.

Invariant: the bound is generous (a failure, not a measurement); a test that needs the
figure prints the returned seconds, perf/ is where latencies are asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


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


def settled_text(path: Path, quiet: float = 0.3, timeout: float = 10.0) -> str:
    """A log file's text once it has stopped growing for `quiet` seconds.

    Services write log lines from a background thread (dispatchd.common.log_queue), a few
    milliseconds after the call that caused them: a test that looks for a line that must NOT
    be there reads the file only after the writer has caught up.
    """
    started = time.monotonic()
    size, since = -1, time.monotonic()
    while time.monotonic() - started < timeout:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.02)
    return path.read_text(errors="replace")
