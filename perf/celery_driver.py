"""The Celery end-to-end driver (its own process, in the Celery virtualenv): one phase of no-op tasks.

    PERF_CELERY_REDIS=URL .perf/celery-venv/bin/python -m perf.celery_driver --phase open|saturation|bulk ...

How phases run is perf.phase's (the same as dispatchd's); this is Celery's side of it, from
one client: `apply_async` is synchronous, so one submitter (--window 1) runs back to back.
Timestamps per task: sent (client time.time()), the handler's own start and end (its
result) and the result backend's `date_done` (submit -> recorded); Celery keeps no claim
time, so that leg is reported missing. The backlog is the broker queue's length; a task
ended once its result key exists. Imports only the stdlib, Celery and redis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import redis

from perf.celery_tasks import noop
from perf.journeys import Journey, handler_times
from perf.phase import Side, measure, phase_arguments

QUEUE = "celery"
META = "celery-task-meta-"
CHUNK = 1000


def recorded_at(date_done: str | None) -> float | None:
    """Celery's date_done (ISO 8601, UTC, naive in some versions) as epoch seconds."""
    if not date_done:
        return None
    when = dt.datetime.fromisoformat(date_done)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


class Celery(Side):
    def __init__(self, pids: Mapping[str, int]) -> None:
        super().__init__(pids, "celery-driver")
        self.redis = redis.Redis.from_url(os.environ["PERF_CELERY_REDIS"])  # as perf.celery_tasks'

    async def submit(self) -> None:
        sent, started = time.time(), time.perf_counter()
        try:
            result = noop.apply_async()
        except Exception as exc:  # whatever the broker says is an error of this load
            self.errors[type(exc).__name__] += 1
        else:
            self.call_seconds.append(time.perf_counter() - started)
            self.sent[result.id] = sent
        await asyncio.sleep(0)  # apply_async blocks: let the gate and the timers run

    async def backlog(self) -> int:
        return int(self.redis.llen(QUEUE))

    def metas(self, ids: list[str]) -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = []
        for i in range(0, len(ids), CHUNK):
            values = self.redis.mget([META + task_id for task_id in ids[i : i + CHUNK]])
            found += [None if v is None else json.loads(v) for v in values]
        return found

    async def ended(self, ids: list[str]) -> int:
        return sum(meta is not None for meta in self.metas(ids))

    async def journeys(self) -> list[Journey]:
        found = []
        for task_id, meta in zip(self.sent, self.metas(list(self.sent)), strict=True):
            if meta is not None:
                result = meta.get("result")
                start, end = handler_times(result if isinstance(result, str) else None)
                succeeded = meta.get("status") == "SUCCESS"
                found.append(Journey(self.sent[task_id], succeeded, None, start, end, recorded_at(meta["date_done"])))
        return found

    async def after_bulk(self) -> None:
        self.redis.delete(QUEUE)  # no worker will run them


def main() -> None:
    p = phase_arguments(__doc__.split("\n")[0])
    p.add_argument("--ping", action="store_true", help="only wait until the worker runs a task; write versions")
    args = p.parse_args()
    if args.ping:
        import celery

        noop.apply_async().get(timeout=60)
        result: dict[str, Any] = {"celery": celery.__version__, "redis_client": redis.__version__}
    else:
        result = {"phase": args.phase, "submit": "apply_async"} | asyncio.run(
            measure(Celery(dict(args.pid)), args, f"celery {args.phase}")
        )
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
