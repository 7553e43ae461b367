"""Futures keyed by id and resolved by events: what WaitJob's waiters and log followers wait on.

Invariant: a future is registered under its keys for exactly the `with` block of `watch_keys`
(registered before the caller reads, so an event that lands between the read and the wait
still resolves it), and `wake(key)` resolves every pending future under that key once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence


class Wakeups:
    def __init__(self) -> None:
        self._futures: dict[str, set[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def watch_keys(self, keys: Sequence[str]) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next wake of any of `keys` (or by a wake-all)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._futures.setdefault(key, set()).add(future)
        try:
            yield future
        finally:
            for key in keys:
                waiting = self._futures.get(key)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._futures[key]

    def waiting(self) -> int:
        return sum(len(s) for s in self._futures.values())

    def wake(self, key: str) -> None:
        for future in self._futures.get(key, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        for key in list(self._futures):
            self.wake(key)
