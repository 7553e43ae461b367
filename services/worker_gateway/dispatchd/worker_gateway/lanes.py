"""Ordered lanes: run a stream's messages concurrently, but one key's messages in order.

A worker's log chunks, start notice and result for one execution must be applied in the
order sent (a result applied before the logs would make the logs stale), while a slow
write for one execution must not hold up the others. Each key gets its own FIFO drained
by one task; a semaphore bounds what is queued, which pushes back on the reader and so,
through gRPC flow control, on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("dispatchd.gateway.lanes")

Operation = Callable[[], Awaitable[None]]


class Lanes:
    def __init__(self, limit: int = 64) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._lanes: dict[str, deque[Operation]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, key: str, operation: Operation) -> None:
        """Queue an operation behind earlier ones of the same key; waits while the lanes are full."""
        await self._slots.acquire()
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(operation)
            return
        self._lanes[key] = deque([operation])
        self._idle.clear()
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                operation = lane.popleft()
                try:
                    await operation()
                except Exception:  # one failed message must not stop the others of the stream
                    log.exception("processing a worker message failed")
                finally:
                    self._slots.release()
        finally:
            del self._lanes[key]
            if not self._lanes:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued has been processed; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
