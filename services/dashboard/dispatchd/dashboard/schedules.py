"""The schedules pages: every schedule with its timing and next fire, one schedule with its fires,
and pausing or resuming one.

Invariant: what a page shows is the control plane's answer of this request (ListSchedules,
GetSchedule, ListScheduleFires: the fire rows the leader wrote in Postgres); pause and resume
are POSTs carrying the CSRF token, made with the caller's own token, so the control plane
decides whether they are allowed (the buttons only follow the role table).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from dispatchd.client import Schedule, ScheduleFire
from dispatchd.dashboard import keys
from dispatchd.dashboard.calls import client_for, local_page, see_other

NEXT_FIRES = 5
FIRES_SHOWN = 50

routes = web.RouteTableDef()


def every(interval: dt.timedelta) -> str:
    """A fixed interval as a person says it: "every 90 s", "every 5 min", "every 2 h", "every 1 d"."""
    seconds = interval.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {int(seconds // size)} {unit}"
    return f"every {seconds:g} s"


def timing(schedule: Schedule) -> str:
    """When it fires: the cron expression in its time zone, or the interval (absolute time)."""
    if schedule.interval is not None:
        return every(schedule.interval)
    return f"{schedule.cron} ({schedule.time_zone or 'UTC'})"


def target(schedule: Schedule) -> str:
    return f"workflow {schedule.workflow_name}" if schedule.workflow_name else schedule.job_type


def outcome(fire: ScheduleFire) -> tuple[str, str]:
    """What a fire started, as (link, text): its job or run, else why it started nothing."""
    if fire.job_id:
        return f"/jobs/{fire.job_id}", fire.job_id
    if fire.run_id:
        return f"/workflows/runs/{fire.run_id}", fire.run_id
    return "", fire.error or "skipped: the previous one was still active (overlap policy)"


def _render(request: web.Request, template: str, **context: Any) -> web.Response:
    return request.app[keys.PAGES].render(
        request,
        template,
        timing=timing,
        target=target,
        outcome=outcome,
        now=dt.datetime.now(dt.UTC),
        notice=request.query.get("notice", ""),
        **context,
    )


@routes.get("/schedules")
async def schedules_page(request: web.Request) -> web.Response:
    return _render(request, "schedules.html", schedules=await client_for(request).list_schedules())


@routes.get("/schedules/{name}")
async def schedule_page(request: web.Request) -> web.Response:
    client = client_for(request)
    name = request.match_info["name"]
    schedule = await client.get_schedule(name, next_fires=NEXT_FIRES)
    fires = await client.schedule_fires(name, limit=FIRES_SHOWN)
    return _render(request, "schedule.html", schedule=schedule, fires=fires)


async def _switch(request: web.Request, pause: bool) -> web.Response:
    name = request.match_info["name"]
    client = client_for(request)
    schedule = await (client.pause_schedule(name) if pause else client.resume_schedule(name))
    back = local_page((await request.post()).get("back"), "/schedules")
    raise see_other(back, notice=f"{schedule.name} is {'paused' if schedule.paused else 'running'}")


@routes.post("/schedules/{name}/pause")
async def pause(request: web.Request) -> web.Response:
    return await _switch(request, pause=True)


@routes.post("/schedules/{name}/resume")
async def resume(request: web.Request) -> web.Response:
    return await _switch(request, pause=False)
