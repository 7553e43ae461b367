"""Which due QUEUED executions are missing from their ready queue, and since when: the requeue repair's evidence.

Invariant: an execution is handed back for repair only when Postgres had it QUEUED and due and
its ready queue lacked it at observations at least `grace` seconds apart, with no observation in
between finding it there. The fast path's own windows (a submit committed but not yet pushed, an
entry a gateway popped and is claiming) last milliseconds and never reach the grace, so under
healthy load nothing is repaired and nothing is re-pushed; with grace 0 every absence is
repaired at once. What is remembered is bounded by what one scan of the due rows saw: an
execution not seen again in the next full scan (claimed, cancelled) is forgotten.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store.rows import QueuedRef


class Absences:
    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._since: dict[uuid.UUID, float] = {}  # first observed missing, by execution id
        self._scanned: set[uuid.UUID] = set()  # observed missing during the current scan
        self.absent = 0  # of the refs the last `overdue` call looked at, how many Redis lacked

    async def overdue(self, queues: ReadyQueues, refs: Sequence[QueuedRef]) -> list[QueuedRef]:
        """Of `refs` (due and QUEUED in Postgres), those missing from Redis for at least the grace."""
        if not refs:
            return []
        by_type: dict[str, list[QueuedRef]] = {}
        for ref in refs:
            by_type.setdefault(ref.job_type, []).append(ref)
        pipe = queues.client.pipeline(transaction=False)
        for job_type, typed in by_type.items():
            pipe.zmscore(queues.keys.ready(job_type), [str(ref.execution_id) for ref in typed])
        replies = await pipe.execute()
        now = self.clock()
        overdue = []
        self.absent = 0
        for ref, score in zip(
            (ref for typed in by_type.values() for ref in typed), (s for r in replies for s in r), strict=True
        ):
            if score is not None:
                self._since.pop(ref.execution_id, None)
                continue
            self._scanned.add(ref.execution_id)
            self.absent += 1
            if now - self._since.setdefault(ref.execution_id, now) >= self.grace:
                overdue.append(ref)
        return overdue

    def end_scan(self) -> None:
        """The due rows were all seen: forget absences this scan did not confirm."""
        self._since = {key: at for key, at in self._since.items() if key in self._scanned}
        self._scanned = set()

    def repaired(self, refs: Sequence[QueuedRef]) -> None:
        for ref in refs:
            self._since.pop(ref.execution_id, None)

    def seconds_to_next(self) -> float | None:
        """Until the earliest remembered absence reaches the grace (a pass should look then)."""
        if not self._since:
            return None
        return max(0.0, min(self._since.values()) + self.grace - self.clock())
