"""Logging: one JSON object per line (or plain text for people at a terminal), written off the caller's thread.

Invariant: after `configure_logging` every record goes through one bounded queue to a writer
thread (dispatchd.common.log_queue), so logging never blocks the event loop; repeated warnings
and errors are rate-limited (dispatchd.common.repeats); `stop_logging` (also run at exit)
drains and flushes it all. The line format does not depend on any of that. Each record is
stamped with its job and trace ids (dispatchd.common.correlation) on the thread that logs it.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time

from dispatchd.common.correlation import ATTRIBUTE, CorrelationFilter
from dispatchd.common.log_queue import Lines, LogQueue
from dispatchd.common.repeats import RepeatFilter

_active: LogQueue | None = None
_at_exit = False


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        # What json.dumps(entry, default=str) would build anew for every line.
        self._encoder = json.JSONEncoder(default=str)

    def timestamp(self, record: logging.LogRecord) -> str:
        """`record.created` as `2026-01-02T03:04:05.678Z`; the seconds are rendered once per second."""
        second, stamp = self._second  # one tuple, replaced whole: threads formatting at once agree
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, stamp)
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = getattr(record, ATTRIBUTE, None)
        if ids:
            entry.update(ids)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered by the thread that logged it (log_queue.Inlet)
            entry["exc"] = record.exc_text
        return self._encoder.encode(entry)


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    """Root logging for a process: to stderr through the queue; a second call replaces the first."""
    global _active, _at_exit
    stop_logging()
    handler = Lines(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(level.upper())
    _active = LogQueue()
    _active.attach(root, [handler], "log lines", filters=[RepeatFilter(), CorrelationFilter()])
    _active.start()
    if not _at_exit:
        # Runs before logging's own exit hook (registered first, so run last).
        atexit.register(stop_logging)
        _at_exit = True


def route(logger: logging.Logger, handler: logging.Handler, label: str) -> None:
    """Give `logger` a handler of its own (no propagation): through the queue once logging is configured."""
    logger.propagate = False
    if _active is None:
        logger.handlers[:] = [handler]
    else:
        _active.attach(logger, [handler], label)


def stop_logging() -> None:
    """Write out everything logged so far and log synchronously from now on (idempotent)."""
    global _active
    active, _active = _active, None
    if active is not None:
        active.stop()
