"""Ordered lanes: run a stream's messages concurrently, but one key's messages in order.

A worker's log chunks, start notice and result for one execution must be applied in the
order sent (a result applied before the logs would make the logs stale), while a slow
write for one execution must not hold up the others. Each key gets its own FIFO drained
by one task. A budget of slots bounds what is queued, in messages and in bytes (a message
takes one slot per started BYTES_PER_SLOT of its size), which pushes back on the reader
and so, through gRPC flow control, on the worker: one stream holds at most about
`limit * BYTES_PER_SLOT` bytes of messages not yet applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("dispatchd.gateway.lanes")

Operation = Callable[[], Awaitable[None]]

BYTES_PER_SLOT = 64 * 1024


async def set_within(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event`; False if it was not set within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Lanes:
    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._used = 0
        # Set whenever slots are returned; only the stream's reader waits on it.
        self._freed = asyncio.Event()
        self._lanes: dict[str, deque[tuple[Operation, int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, key: str, operation: Operation, size: int = 0) -> None:
        """Queue an operation of a `size`-byte message behind earlier ones of the same key.

        Waits while the lanes are full; a message larger than the whole budget waits for
        empty lanes and then goes alone.
        """
        slots = min(self._limit, 1 + size // BYTES_PER_SLOT)
        while self._used + slots > self._limit:
            self._freed.clear()
            await self._freed.wait()
        self._used += slots
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append((operation, slots))
            return
        self._lanes[key] = deque([(operation, slots)])
        self._idle.clear()
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                operation, slots = lane.popleft()
                try:
                    await operation()
                except Exception:  # one failed message must not stop the others of the stream
                    log.exception("processing a worker message failed")
                finally:
                    self._used -= slots
                    self._freed.set()
        finally:
            del self._lanes[key]
            if not self._lanes:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued has been processed; False on timeout."""
        return await set_within(self._idle, timeout)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
