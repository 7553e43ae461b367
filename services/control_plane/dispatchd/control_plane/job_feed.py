"""WatchJobs support: the job events of the process's one Redis subscription, fanned out to every watch.

Invariants: a watch never slows the others or the subscription. Each watch has a bounded
queue; the dispatch (inline in the subscription's read loop) only offers an event to the
queues whose filter it matches, and a full queue drops the event and counts it (`missed`),
so a slow reader skips, and learns that it did (`gap`), instead of blocking anyone. When the
subscription is lost or re-established every watch is told that events may have been lost.
Events are parsed only while someone watches (see `job_events` for their format).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from dispatchd.platform import job_events
from dispatchd.platform.job_events import JobEvent

log = logging.getLogger("dispatchd.control_plane.job_feed")

# Events a watch may have waiting before it skips: a burst of this size is delivered whole.
QUEUE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Filter:
    job_type: str | None = None
    status: int | None = None
    job_id: str | None = None

    def matches(self, event: JobEvent) -> bool:
        return (
            (self.job_type is None or event.job_type == self.job_type)
            and (self.status is None or event.status == self.status)
            and (self.job_id is None or event.job_id == self.job_id)
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a watch reads next: an event (None for a bare notice of lost events) and the gap before it."""

    event: JobEvent | None
    gap: bool
    missed: int


@dataclass(eq=False)
class Watch:
    filter: Filter
    limit: int = QUEUE_LIMIT
    _queue: asyncio.Queue[JobEvent | None] = field(init=False)
    _missed: int = 0
    _gap: bool = False
    _ended: bool = False

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.limit)

    def offer(self, event: JobEvent) -> None:
        if not self.filter.matches(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._missed += 1
            self._gap = True

    def interrupted(self) -> None:
        """Events may have been lost: say so with the next delivery (a bare one if none comes)."""
        self._gap = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue delivers the gap soon enough
            self._queue.put_nowait(None)

    def end(self) -> None:
        """The server is stopping: what is queued is still delivered, then `next` returns None."""
        self._ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def next(self) -> Delivery | None:
        while True:
            if self._ended and self._queue.empty():
                return None
            event = await self._queue.get()
            if event is not None or self._gap:  # else a notice whose gap an earlier delivery reported
                break
        delivery = Delivery(event, self._gap, self._missed)
        self._gap, self._missed = False, 0
        return delivery


class JobFeed:
    """The watches of this process; `listeners` (the log followers) hear every event too."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self.listeners: list[Callable[[JobEvent], None]] = []
        self.wanted: Callable[[], bool] = lambda: False  # whether a listener wants events now
        self.closing = False

    @contextlib.contextmanager
    def watch(self, flt: Filter, limit: int = QUEUE_LIMIT) -> Iterator[Watch]:
        w = Watch(flt, limit)
        if self.closing:
            w.end()
        self._watches.add(w)
        try:
            yield w
        finally:
            self._watches.discard(w)

    def watching(self) -> int:
        return len(self._watches)

    def on_terminal(self, data: str) -> None:
        if self._watches or self.wanted():
            self._fan_out(data, lambda d: [job_events.parse_terminal(d)])

    def on_activity(self, data: str) -> None:
        if self._watches or self.wanted():
            self._fan_out(data, job_events.parse_activity)

    def interrupted(self) -> None:
        for w in self._watches:
            w.interrupted()

    def close(self) -> None:
        """Shutdown: every watch ends (after what it has queued) instead of holding the server open."""
        self.closing = True
        for w in self._watches:
            w.end()

    def _fan_out(self, data: str, parse: Callable[[str], Sequence[JobEvent]]) -> None:
        try:
            events = parse(data)
        except ValueError as exc:
            log.warning("ignoring a malformed job event %r: %s", data[:200], exc)
            return
        for event in events:
            for w in self._watches:
                w.offer(event)
            for listener in self.listeners:
                listener(event)
