"""The Celery side of `make perf-compare`: the same no-op task, on Redis broker and result backend.

Runs only in perf-compare's own virtualenv (.perf/celery-venv), never in ours. Settings are
Celery's defaults except what the comparison names: acks_late (a task is acknowledged after
it ran, Celery's closest to at-least-once), a Redis result backend (results recorded, as
ours are in Postgres), JSON serialisation. The broker/backend URL is PERF_CELERY_REDIS.
Invariant: `noop` returns "<start> <end>" (time.time()), exactly as perf.noop does.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("perf", broker=os.environ["PERF_CELERY_REDIS"], backend=os.environ["PERF_CELERY_REDIS"])
app.conf.update(task_acks_late=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="perf.noop")  # type: ignore[untyped-decorator]
def noop() -> str:
    started = time.time()
    return f"{started:.6f} {time.time():.6f}"
