"""A logging filter that lets a repeated warning or error through in a burst, then once per interval.

Invariant: the first occurrence of a line is never suppressed, and no suppressed occurrence goes
uncounted: the next line of the same kind that passes says "(N similar suppressed)", and so does
`overdue()` (which the log writer calls now and then) for a flood that stopped. "The same kind"
is the logger, the level and the message template (`record.msg` before its arguments), so one
caller repeating one failure with different ids cannot flood the log either. Lines below
`level` (lifecycle info) pass untouched; the audit log never goes through this filter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

BURST = 5
INTERVAL_SECONDS = 10.0
# Templates are code constants, so few; an f-string message makes every line its own key.
MAX_KEYS = 1024

Key = tuple[str, int, str]


@dataclass
class _Run:
    """One kind of line: how it has passed lately and what it has suppressed since."""

    last_seen: float
    last_passed: float
    passed: int = 1
    suppressed: int = 0
    sample: logging.LogRecord | None = None  # the latest suppressed occurrence


def annotate(record: logging.LogRecord, suppressed: int) -> logging.LogRecord:
    """`record` with "(N similar suppressed)" after its message (formatted now, args dropped)."""
    if suppressed:
        record.msg = f"{record.getMessage()} ({suppressed} similar suppressed)"
        record.args = None
    return record


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        burst: int = BURST,
        interval: float = INTERVAL_SECONDS,
        level: int = logging.WARNING,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.level = level
        self.max_keys = max_keys
        self.clock = clock
        self._runs: dict[Key, _Run] = {}
        # Any thread may log (the loop, gRPC's, executors'), and the writer calls overdue().
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, record.msg if isinstance(record.msg, str) else str(record.msg))
        now = self.clock()
        with self._lock:
            run = self._runs.get(key)
            if run is None or now - run.last_seen >= self.interval:
                # New, or quiet for a whole interval: a fresh burst.
                carried = run.suppressed if run is not None else 0
                self._start(key, now)
            else:
                run.last_seen = now
                if run.passed >= self.burst and now - run.last_passed < self.interval:
                    run.suppressed += 1
                    run.sample = record
                    return False
                run.passed += 1
                run.last_passed = now
                carried, run.suppressed, run.sample = run.suppressed, 0, None
        annotate(record, carried)
        return True

    def overdue(self, everything: bool = False) -> list[logging.LogRecord]:
        """For each flood that has gone a whole interval without a line passing (`everything`: each
        flood still owing a count, as at exit): its count, as a line."""
        now = self.clock()
        due: list[logging.LogRecord] = []
        with self._lock:
            for run in self._runs.values():
                if run.sample is not None and (everything or now - run.last_passed >= self.interval):
                    # The sample was counted in `suppressed`; it is the line that reports the rest.
                    due.append(annotate(run.sample, run.suppressed - 1))
                    run.last_passed, run.suppressed, run.sample = now, 0, None
        return due

    def _start(self, key: Key, now: float) -> None:
        self._runs[key] = _Run(last_seen=now, last_passed=now)
        if len(self._runs) > self.max_keys:
            # Forget runs that are quiet and owe no count first, then the oldest (dicts keep order).
            for stale in [k for k, r in self._runs.items() if r.sample is None and now - r.last_seen >= self.interval]:
                del self._runs[stale]
            while len(self._runs) > self.max_keys:
                del self._runs[next(iter(self._runs))]
