"""The jobs pages: the list (filters, search, keyset paging) and one job with every attempt.

Invariant: filters go to the control plane (ListJobs), never applied to a partial page here,
so a page is exactly what the server says matches; a search term that parses as a job id opens
that job, any other term is looked up as an idempotency key.
"""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from dispatchd.client import JobStatus
from dispatchd.dashboard import keys
from dispatchd.dashboard.calls import client_for

PAGE_SIZE = 50
# Stored lines rendered with the page; the rest (and new ones) stream in from /jobs/{id}/logs.
LOG_LINES = 500
STATUSES = [status.name.lower() for status in JobStatus if status != JobStatus.UNSPECIFIED]

routes = web.RouteTableDef()


def instant(text: str, field: str) -> dt.datetime | None:
    """A `datetime-local` form value (UTC) or an ISO time; a clear 400 naming the field otherwise."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{field}: not a time (use YYYY-MM-DDTHH:MM, UTC)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@routes.get("/jobs")
async def jobs_page(request: web.Request) -> web.Response:
    query = request.query
    search = query.get("q", "").strip()
    if search and is_uuid(search):
        raise web.HTTPSeeOther(f"/jobs/{search}")
    status = query.get("status", "")
    if status and status not in STATUSES:
        raise web.HTTPBadRequest(text=f"status: not one of {', '.join(STATUSES)}")
    page = await client_for(request).list_jobs(
        status=status or None,
        job_type=query.get("type", "").strip() or None,
        since=instant(query.get("since", ""), "since"),
        until=instant(query.get("until", ""), "until"),
        idempotency_key=search or None,
        page_size=PAGE_SIZE,
        page_token=query.get("page", ""),
    )
    return request.app[keys.PAGES].render(
        request, "jobs.html", jobs=page.items, next_page=page.next_page_token, statuses=STATUSES, query=query
    )


@routes.get("/jobs/{job_id}")
async def job_page(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    if not is_uuid(job_id):
        raise web.HTTPNotFound(text="no such job: a job id is a UUID")
    client = client_for(request)
    job = await client.get(job_id)
    executions = await client.executions(job_id)
    logs = await client.list_logs(job_id, page_size=LOG_LINES)
    return request.app[keys.PAGES].render(
        request,
        "job.html",
        job=job,
        executions=executions,
        logs=logs,
        notice=request.query.get("notice", ""),
    )


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
