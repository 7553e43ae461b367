"""Log records leave the thread that logs through one bounded queue; one writer thread writes them.

Invariant: a thread that logs (above all the event loop) never formats JSON nor writes to a
file or pipe, and never waits: it renders the message (and a traceback, if any), runs the
inlet's filters and puts the record on the queue. When the queue holds CAPACITY records the
record is dropped and counted; the writer says "N log lines dropped" at most once per NOTICE_SECONDS while that goes
on and once more at `stop`. `stop` first points every logger straight at its real handlers
(so a line logged from then on is written at once, not lost), then lets the writer drain the
queue, and flushes every handler: what was logged before SIGTERM is in the output after exit.
A `Lines` handler behind the queue writes what the writer drained in one write per batch
(at most BATCH_LINES lines), not one write and flush per line: it is flushed before the
writer waits for more, so a line is out at most BATCH_SECONDS after the queue emptied.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from dispatchd.common.repeats import RepeatFilter

CAPACITY = 10_000
NOTICE_SECONDS = 5.0
BATCH_SECONDS = 0.02
BATCH_LINES = 512
STOP_SECONDS = 10.0
NOTICES = "dispatchd.logging"

_TRACEBACKS = logging.Formatter()


class Lines(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, behind the queue (`batched`), holds its lines for one write per batch.

    The lines of every batched handler wait in one list, in the order they were handled, so
    handlers sharing a stream (the service log and the audit log on stderr) keep their order.
    Directly (not batched) it is a plain StreamHandler: each line written and flushed at once.
    """

    _held: list[tuple[Lines, str]] = []
    _held_lock = threading.Lock()

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.batched = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.batched:
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with Lines._held_lock:
            Lines._held.append((self, line))
            full = len(Lines._held) >= BATCH_LINES
        if full:
            Lines.write_held()

    @classmethod
    def write_held(cls) -> None:
        """Write every held line, in order, one write per run of lines bound for one stream."""
        with cls._held_lock:
            held, cls._held = cls._held, []
        start = 0
        while start < len(held):
            handler, end = held[start][0], start + 1
            while end < len(held) and held[end][0].stream is handler.stream:
                end += 1
            with handler.lock or contextlib.nullcontext():
                try:
                    handler.stream.write("".join(line for _, line in held[start:end]))
                    handler.stream.flush()
                except Exception:
                    handler.handleError(logging.makeLogRecord({"msg": "a batch of log lines could not be written"}))
            start = end

    def flush(self) -> None:
        if not self.batched:
            Lines.write_held()
            super().flush()


class Inlet(logging.handlers.QueueHandler):
    """A logger's handler: puts records on the queue without waiting, counting what did not fit."""

    def __init__(self, records: queue.SimpleQueue[Any], capacity: int, label: str) -> None:
        super().__init__(records)
        self.records = records
        self.capacity = capacity
        self.label = label
        self._dropped = 0
        self._drop_lock = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Rendered here, not in the writer: arguments may change once the call returns, and a
        # traceback is only sure to describe the failure while it is being handled. Changed in
        # place, not copied (a copy per call is the cost this avoids): any other handler still
        # sees the same message, and the traceback as text (exc_text, which Formatter uses).
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        # A SimpleQueue (C, no Condition) costs the caller far less than a bounded Queue; the
        # size check races only with other logging threads, so it overshoots by at most one
        # record per thread.
        if self.records.qsize() < self.capacity:
            self.records.put(record)
            return
        with self._drop_lock:
            self._dropped += 1

    def take_dropped(self) -> int:
        with self._drop_lock:
            dropped, self._dropped = self._dropped, 0
        return dropped


class _Writer(logging.handlers.QueueListener):
    """The writing thread: routes each record by logger name and reports what was dropped or suppressed."""

    def __init__(self, records: queue.SimpleQueue[Any]) -> None:
        super().__init__(records, respect_handler_level=True)
        self.records = records
        self.routes: dict[str, tuple[logging.Handler, ...]] = {}
        self.inlets: dict[str, Inlet] = {}
        self._last_report = time.monotonic()

    def dequeue(self, block: bool) -> Any:
        try:
            return self.records.get_nowait()
        except queue.Empty:
            pass
        self.write_batches()
        # Drained. Under load, let the next records gather rather than wake (and take the GIL
        # from the loop) once per record; idle, block until one comes.
        time.sleep(BATCH_SECONDS)
        while True:
            if time.monotonic() - self._last_report >= NOTICE_SECONDS:
                self.report()
            try:
                return self.records.get(timeout=NOTICE_SECONDS)
            except queue.Empty:
                continue

    def all_handlers(self) -> set[logging.Handler]:
        return {h for route in (self.handlers, *self.routes.values()) for h in route}

    def write_batches(self) -> None:
        Lines.write_held()

    def handle(self, record: logging.LogRecord, route: str | None = None) -> None:
        """Write `record` where records of logger `route` (default: its own logger) go."""
        for handler in self.routes.get(route or record.name, self.handlers):
            if record.levelno >= handler.level:
                handler.handle(record)

    def report(self, final: bool = False) -> None:
        self._last_report = time.monotonic()
        for name, inlet in list(self.inlets.items()):
            dropped = inlet.take_dropped()
            if dropped:
                # Said where the lost records would have gone: an audit reader sees the gap.
                self.handle(
                    logging.LogRecord(
                        NOTICES,
                        logging.WARNING,
                        __file__,
                        0,
                        "%d %s dropped: the log queue was full",
                        (dropped, inlet.label),
                        None,
                    ),
                    name,
                )
            for repeat in (f for f in inlet.filters if isinstance(f, RepeatFilter)):
                for record in repeat.overdue(everything=final):
                    self.handle(record)

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self.records.put(None)  # None: QueueListener's sentinel, behind every record queued so far
        # Bounded: a writer stuck on an output that does not drain must not hang the exit.
        thread.join(STOP_SECONDS)
        self._thread = None
        self.report(final=True)
        for handler in self.all_handlers():
            handler.flush()


class LogQueue:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.writer = _Writer(self.records)
        self._direct: dict[str, tuple[logging.Logger, tuple[logging.Handler, ...]]] = {}

    def attach(
        self,
        logger: logging.Logger,
        handlers: Sequence[logging.Handler],
        label: str,
        filters: Sequence[logging.Filter] = (),
    ) -> None:
        """From now on `logger`'s records reach `handlers` through the queue (the root's: also its children's)."""
        route = tuple(handlers)
        for handler in route:
            if isinstance(handler, Lines):
                handler.batched = True
        if logger is logging.getLogger():
            self.writer.handlers = route
        else:
            self.writer.routes[logger.name] = route  # before the inlet: no record goes unrouted
        inlet = Inlet(self.records, self.capacity, label)
        for item in filters:
            inlet.addFilter(item)
        self.writer.inlets[logger.name] = inlet
        self._direct[logger.name] = (logger, route)
        logger.handlers[:] = [inlet]

    def start(self) -> None:
        self.writer.start()

    def stop(self) -> None:
        for logger, handlers in self._direct.values():
            logger.handlers[:] = list(handlers)
        self.writer.stop()
        # Written out by the writer's stop (unbatched: flush writes what is held); direct from now on.
        for handler in self.writer.all_handlers():
            if isinstance(handler, Lines):
                handler.batched = False
                handler.flush()
