"""Dead letters and the actions on jobs: redrive (dead letters) and cancel (jobs still running).

Invariant: an action is a POST carrying the CSRF token (csrf.py), made with the caller's own
token; whether it is allowed is the control plane's answer (a refusal is shown as such), the
buttons only follow the role table so a viewer is not offered what would be refused.
"""

from __future__ import annotations

from aiohttp import web

from dispatchd.dashboard import keys
from dispatchd.dashboard.calls import client_for, local_page, see_other
from dispatchd.dashboard.jobs import PAGE_SIZE, instant

routes = web.RouteTableDef()


@routes.get("/dead-letters")
async def dead_letters_page(request: web.Request) -> web.Response:
    query = request.query
    page = await client_for(request).dead_letters(
        job_type=query.get("type", "").strip() or None,
        since=instant(query.get("since", ""), "since"),
        until=instant(query.get("until", ""), "until"),
        page_size=PAGE_SIZE,
        page_token=query.get("page", ""),
    )
    return request.app[keys.PAGES].render(
        request,
        "dead_letters.html",
        letters=page.items,
        next_page=page.next_page_token,
        query=query,
        notice=query.get("notice", ""),
    )


async def _form(request: web.Request) -> tuple[str, str]:
    """The job named by the form, and the local page to return to (never another site)."""
    form = await request.post()
    job_id, back = form.get("job_id"), form.get("back")
    if not isinstance(job_id, str) or not job_id:
        raise web.HTTPBadRequest(text="job_id: missing")
    return job_id, local_page(back, "/dead-letters")


@routes.post("/dead-letters/redrive")
async def redrive(request: web.Request) -> web.Response:
    job_id, back = await _form(request)
    outcome = await client_for(request).redrive([job_id], reason="redriven from the dashboard")
    skipped = "; ".join(f"{s.job_id}: {s.reason}" for s in outcome.skipped)
    notice = f"skipped {skipped}" if skipped else f"redriven: {job_id}"
    raise see_other(back, notice=notice)


@routes.post("/jobs/{job_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await client_for(request).cancel(job_id, reason="cancelled from the dashboard")
    raise see_other(f"/jobs/{job.job_id}", notice=f"cancel requested: the job is {job.status.name.lower()}")
