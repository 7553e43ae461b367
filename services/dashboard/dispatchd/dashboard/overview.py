"""The overview: throughput and outcomes per minute over the last half hour, as a chart.

Invariant: the numbers are counted from the jobs the control plane lists (created in the
window, newest first, at most `MAX_JOBS`); when the window holds more, the page says that its
older minutes are partial rather than drawing them as quiet. The browser then adds what the
live feed reports, so the current minute moves without reloading.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from aiohttp import web

from dispatchd.client import Job, JobStatus
from dispatchd.dashboard import keys
from dispatchd.dashboard.calls import client_for

WINDOW = dt.timedelta(minutes=30)
MAX_JOBS = 2000
OUTCOMES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)

routes = web.RouteTableDef()


def minute(at: dt.datetime) -> int:
    """The start of `at`'s minute, in Unix seconds (the chart's x axis)."""
    return int(at.timestamp()) // 60 * 60


def throughput(found: list[Job], now: dt.datetime) -> dict[str, list[int]]:
    """Per minute of the window: jobs submitted, and jobs finished by outcome."""
    first = minute(now - WINDOW)
    minutes = list(range(first, minute(now) + 60, 60))
    submitted: Counter[int] = Counter()
    finished: dict[JobStatus, Counter[int]] = {status: Counter() for status in OUTCOMES}
    for job in found:
        if job.created_at is not None:
            submitted[minute(job.created_at)] += 1
        if job.finished_at is not None and job.status in finished:
            finished[job.status][minute(job.finished_at)] += 1
    series = {"minutes": minutes, "submitted": [submitted[m] for m in minutes]}
    series |= {status.name.lower(): [finished[status][m] for m in minutes] for status in OUTCOMES}
    return series


@routes.get("/")
async def overview_page(request: web.Request) -> web.Response:
    now = dt.datetime.now(dt.UTC)
    client = client_for(request)
    found: list[Job] = []
    token = ""
    while len(found) < MAX_JOBS:
        page = await client.list_jobs(since=now - WINDOW, page_size=500, page_token=token)
        found.extend(page.items)
        token = page.next_page_token
        if not token:
            break
    return request.app[keys.PAGES].render(
        request, "overview.html", series=throughput(found, now), partial=bool(token), counted=len(found)
    )
