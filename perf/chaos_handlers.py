"""Worker handlers for chaos runs: the SDK's builtins, each run also written to a ledger.

    dispatchd-worker --handlers perf.chaos_handlers:register      # DISPATCHD_CHAOS_LEDGER=path

The ledger is the side channel showing what really ran, whatever the platform recorded:
one line per handler start and end (`start`, `done`, `error`, `cancelled`) with the job,
execution, attempt and worker. Each line is one O_APPEND write(2), so lines of
concurrent workers never interleave, and a line written survives the worker's SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatchd.sdk import handlers
from dispatchd.sdk.task import Task

if TYPE_CHECKING:
    from dispatchd.sdk.worker import Worker

LEDGER_ENV = "DISPATCHD_CHAOS_LEDGER"
BUILTINS: dict[str, Callable[[Task], Awaitable[Any]]] = {
    "builtin.echo": handlers.echo,
    "builtin.sleep": handlers.sleep,
    "builtin.fail": handlers.fail,
    "builtin.flaky": handlers.flaky,
}


class Ledger:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._worker = os.environ.get("DISPATCHD_CHAOS_WORKER", str(os.getpid()))

    def write(self, event: str, task: Task) -> None:
        line = f"{event} {task.job_id} {task.execution_id} {task.attempt} {self._worker} {time.time():.6f}\n"
        os.write(self._fd, line.encode())


def recorded(ledger: Ledger, handler: Callable[[Task], Awaitable[Any]]) -> Callable[[Task], Awaitable[Any]]:
    async def run(task: Task) -> Any:
        ledger.write("start", task)
        try:
            result = await handler(task)
        except asyncio.CancelledError:
            ledger.write("cancelled", task)
            raise
        except BaseException:
            ledger.write("error", task)
            raise
        ledger.write("done", task)
        return result

    return run


def register(worker: Worker) -> None:
    ledger = Ledger(os.environ[LEDGER_ENV])
    for job_type, handler in BUILTINS.items():
        worker.register(job_type, recorded(ledger, handler))


@dataclass(frozen=True, slots=True)
class Entry:
    event: str
    job_id: str
    execution_id: str
    attempt: int
    worker: str
    at: float


def read_ledger(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 6:  # a line cut short by SIGKILL mid-write cannot happen, but be lenient
            event, job_id, execution_id, attempt, worker, at = parts
            entries.append(Entry(event, job_id, execution_id, int(attempt), worker, float(at)))
    return entries
