"""What the cluster is made of right now: connected workers, queues per job type, scheduler and region.

Invariant: every figure is the control plane's answer of this request (ListWorkers,
GetQueueStats, GetClusterStatus: Postgres and the leader lease, the sources of truth); the
queue chart samples `/queues.json` every `QUEUE_SAMPLE_SECONDS`, the only timed refresh.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from dispatchd.client import QueueStats
from dispatchd.dashboard import keys
from dispatchd.dashboard.calls import client_for

QUEUE_SAMPLE_SECONDS = 5

routes = web.RouteTableDef()


@routes.get("/workers")
async def workers_page(request: web.Request) -> web.Response:
    offline = request.query.get("offline") == "1"
    found = await client_for(request).workers(include_offline=offline)
    return request.app[keys.PAGES].render(
        request, "workers.html", workers=found, offline=offline, now=dt.datetime.now(dt.UTC)
    )


def queue_rows(queues: list[QueueStats]) -> list[dict[str, Any]]:
    return [
        {
            "job_type": q.job_type,
            "depth": q.depth,
            "delayed": q.delayed,
            "running": q.running,
            "oldest_age": None if q.oldest_due_age is None else q.oldest_due_age.total_seconds(),
        }
        for q in queues
    ]


@routes.get("/queues")
async def queues_page(request: web.Request) -> web.Response:
    queues = await client_for(request).queue_stats()
    return request.app[keys.PAGES].render(
        request, "queues.html", queues=queue_rows(queues), sample_seconds=QUEUE_SAMPLE_SECONDS
    )


@routes.get("/queues.json")
async def queues_json(request: web.Request) -> web.Response:
    queues = await client_for(request).queue_stats()
    return web.json_response({"at": dt.datetime.now(dt.UTC).timestamp(), "queues": queue_rows(queues)})


@routes.get("/status")
async def status_page(request: web.Request) -> web.Response:
    status = await client_for(request).cluster_status()
    return request.app[keys.PAGES].render(request, "status.html", cluster=status)
