"""The perf no-op handler: does nothing, and says when it started and ended.

    dispatchd-worker --handlers perf.noop:register

Invariant: the result is exactly `b"<start> <end>"`, both `time.time()` on the worker's
host with microseconds, so the end-to-end driver reads submit -> handler start and
submit -> handler done from Postgres alongside the platform's own timestamps (same host
clock when everything is co-located, as perf runs are).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dispatchd.sdk.task import Task

if TYPE_CHECKING:
    from dispatchd.sdk.worker import Worker

JOB_TYPE = "perf.noop"


async def noop(task: Task) -> bytes:
    started = time.time()
    return f"{started:.6f} {time.time():.6f}".encode()


def register(worker: Worker) -> None:
    worker.register(JOB_TYPE, noop)
