"""The workflows pages: definitions and recent runs, one run with its steps, and cancelling a run.

Invariant: every figure is the control plane's answer of this request (ListWorkflows,
ListWorkflowRuns, GetWorkflowRun); filters go to the server, never applied to a partial page
here. A run's page names its steps' job ids so the browser re-reads it when the job-event feed
reports one of them (no timed refresh unless the feed is refused; then at most every
`FALLBACK_REFRESH_SECONDS`, only while the run is active).
"""

from __future__ import annotations

from aiohttp import web

from dispatchd.client import WorkflowRun, WorkflowRunStatus
from dispatchd.dashboard import dag, keys
from dispatchd.dashboard.calls import client_for, see_other
from dispatchd.dashboard.jobs import PAGE_SIZE, is_uuid

RUN_STATUSES = [s.name.lower() for s in WorkflowRunStatus if s != WorkflowRunStatus.UNSPECIFIED]
FALLBACK_REFRESH_SECONDS = 5

routes = web.RouteTableDef()


@routes.get("/workflows")
async def workflows_page(request: web.Request) -> web.Response:
    query = request.query
    status = query.get("status", "")
    if status and status not in RUN_STATUSES:
        raise web.HTTPBadRequest(text=f"status: not one of {', '.join(RUN_STATUSES)}")
    client = client_for(request)
    definitions = await client.workflows()
    runs = await client.workflow_runs(
        name=query.get("name", "").strip() or None,
        status=status or None,
        page_size=PAGE_SIZE,
        page_token=query.get("page", ""),
    )
    return request.app[keys.PAGES].render(
        request,
        "workflows.html",
        definitions=definitions,
        runs=runs.items,
        next_page=runs.next_page_token,
        statuses=RUN_STATUSES,
        query=query,
    )


def drawing(run: WorkflowRun) -> dag.Drawing | None:
    return dag.layout([(s.step_id, s.depends_on, s.status.name.lower(), s.job_id) for s in run.steps])


@routes.get("/workflows/runs/{run_id}")
async def run_page(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    if not is_uuid(run_id):
        raise web.HTTPNotFound(text="no such run: a run id is a UUID")
    run = await client_for(request).workflow_run(run_id)
    return request.app[keys.PAGES].render(
        request,
        "workflow_run.html",
        run=run,
        drawing=drawing(run),
        fallback_seconds=FALLBACK_REFRESH_SECONDS,
        notice=request.query.get("notice", ""),
    )


@routes.post("/workflows/runs/{run_id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    run = await client_for(request).cancel_workflow(request.match_info["run_id"], reason="cancelled from the dashboard")
    raise see_other(f"/workflows/runs/{run.run_id}", notice=f"cancel requested: the run is {run.status.name.lower()}")
