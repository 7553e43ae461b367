"""The progress line every perf phase shows on the terminal (stdlib only: the Celery venv imports it too).

Invariant: progress goes to stderr, never stdout (stdout carries the summary table); on a
terminal one line is redrawn in place, elsewhere (CI logs, pytest) a line is printed every
LOG_SECONDS so logs stay short.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

REDRAW_SECONDS = 0.5
LOG_SECONDS = 5.0


class Progress:
    def __init__(self, label: str, seconds: float | None = None) -> None:
        self.label = label
        self.seconds = seconds
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, status: str, final: bool = False) -> None:
        now = time.monotonic()
        if not final and not self.tty and now - self._last < LOG_SECONDS:
            return
        self._last = now
        elapsed = now - self.started
        of = f"/{self.seconds:.0f}s" if self.seconds else "s"
        line = f"[{self.label}] {elapsed:5.1f}{of} {status}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    async def follow(self, status: Callable[[], str]) -> None:
        """Redraw `status()` until cancelled (run it as a task beside the work)."""
        try:
            while True:
                self.show(status())
                await asyncio.sleep(REDRAW_SECONDS)
        except asyncio.CancelledError:
            self.show(status(), final=True)
            raise


async def following(progress: Progress, status: Callable[[], str], work: asyncio.Future[T]) -> T:
    """Await `work` while `progress` follows `status()`."""
    task = asyncio.create_task(progress.follow(status))
    try:
        return await work
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
