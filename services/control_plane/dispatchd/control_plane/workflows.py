"""JobService's workflow methods: register and list definitions, start, read, list and cancel runs.

Invariant: as for jobs, Postgres decides and Redis only hears of it after the commit: a run's
root steps (and any step a cancel released) are pushed to their ready queues once their
transaction committed; if that push is lost the scheduler's reconcile pass queues them.
Runs carry their submitter, so a `submitter`-role caller sees only its own runs (others
read as NOT_FOUND), exactly like its jobs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import grpc

from dispatchd.control_plane import validation, workflow_convert
from dispatchd.control_plane.submits import REDIS_BUDGET_SECONDS
from dispatchd.platform import metrics, paging
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument, NotFound
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.security import access
from dispatchd.platform.states import JobStatus, WorkflowRunStatus
from dispatchd.platform.store import workflow_runs, workflows
from dispatchd.platform.store.jobs import Cancelled
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.platform.store.workflow_progress import Progress
from dispatchd.platform.workflow_definitions import parse
from dispatchd.v1 import workflow_pb2

log = logging.getLogger("dispatchd.control_plane.workflows")

Context = grpc.aio.ServicerContext[Any, Any]


async def push(queues: ReadyQueues, refs: list[QueuedRef], progress: Progress | None = None) -> None:
    """After a commit: queue what became due and announce the steps a run ended (best effort)."""
    ended = progress.ended if progress is not None else []
    refs = refs + (progress.queued if progress is not None else [])
    if not refs and not ended:
        return
    try:
        async with asyncio.timeout(REDIS_BUDGET_SECONDS):
            await queues.enqueue(refs)
            for job_id, status in ended:
                await queues.publish_job_event(str(job_id), int(status))
    except Exception as exc:  # queued in Postgres; the scheduler pushes them
        metrics.count_store_error(exc, "redis")
        log.warning("could not push workflow steps to their ready queues (the scheduler will): %s", exc)


class WorkflowMethods:
    """Mixed into JobService, whose fields these are."""

    settings: Settings
    pool: asyncpg.Pool
    queues: ReadyQueues
    pages: paging.PageTokens

    async def _announce_cancel(self, cancelled: Cancelled, reason: str) -> None:
        raise NotImplementedError  # JobService's

    async def RegisterWorkflow(  # noqa: N802
        self, request: workflow_pb2.RegisterWorkflowRequest, context: Context
    ) -> workflow_pb2.RegisterWorkflowResponse:
        definition = parse(workflow_convert.document(request.definition))
        async with self.pool.acquire() as conn:
            stored, created = await workflows.register(conn, definition, "api")
        return workflow_pb2.RegisterWorkflowResponse(definition=workflow_convert.definition(stored), created=created)

    async def ListWorkflows(  # noqa: N802
        self, request: workflow_pb2.ListWorkflowsRequest, context: Context
    ) -> workflow_pb2.ListWorkflowsResponse:
        name = validation.job_type(request.name, "name") if request.name else None
        stored = await workflows.list_definitions(self.pool, name)
        return workflow_pb2.ListWorkflowsResponse(definitions=[workflow_convert.definition(s) for s in stored])

    async def StartWorkflowRun(  # noqa: N802
        self, request: workflow_pb2.StartWorkflowRunRequest, context: Context
    ) -> workflow_pb2.StartWorkflowRunResponse:
        if request.workflow_version < 0:
            raise InvalidArgument("workflow_version must not be negative (0: the latest)")
        if len(request.input) > self.settings.max_payload_bytes:
            raise InvalidArgument(
                f"input is {len(request.input)} bytes; the limit is {self.settings.max_payload_bytes}"
            )
        key = validation.idempotency_key(request.idempotency_key)
        async with self.pool.acquire() as conn, conn.transaction():
            started = await workflows.start_run(
                conn,
                name=validation.job_type(request.workflow_name, "workflow_name"),
                version=request.workflow_version or None,
                run_input=bytes(request.input),
                idempotency_key=key,
                submitted_by=access.submitter(),
            )
        await push(self.queues, started.queued)
        run = await workflow_runs.get_run(self.pool, started.run_id)
        return workflow_pb2.StartWorkflowRunResponse(run=workflow_convert.run(run), deduplicated=started.deduplicated)

    async def _visible_run(self, run_id: str) -> workflow_runs.RunRow:
        row = await workflow_runs.get_run(self.pool, validation.job_id(run_id, "run_id"))
        owner = access.owner_filter()
        if owner is not None and row.submitted_by != owner:
            raise NotFound(f"workflow run {row.run_id} not found")
        return row

    async def GetWorkflowRun(  # noqa: N802
        self, request: workflow_pb2.GetWorkflowRunRequest, context: Context
    ) -> workflow_pb2.GetWorkflowRunResponse:
        return workflow_pb2.GetWorkflowRunResponse(run=workflow_convert.run(await self._visible_run(request.run_id)))

    async def ListWorkflowRuns(  # noqa: N802
        self, request: workflow_pb2.ListWorkflowRunsRequest, context: Context
    ) -> workflow_pb2.ListWorkflowRunsResponse:
        status = validation.enum_filter(WorkflowRunStatus, request.status, "workflow run")
        name = validation.job_type(request.workflow_name, "workflow_name") if request.workflow_name else None
        owner = access.owner_filter()
        listing = paging.Listing("workflow-runs", (name, None if status is None else int(status), owner))
        runs, last = await workflow_runs.list_runs(
            self.pool,
            workflow_name=name,
            status=status,
            page_size=validation.page_size(request.page_size, self.settings),
            after=self.pages.open_time_id(listing, validation.page_token(request.page_token)),
            submitted_by=owner,
        )
        token = "" if last is None else self.pages.issue_time_id(listing, *last)
        return workflow_pb2.ListWorkflowRunsResponse(
            runs=[workflow_convert.run(r) for r in runs], next_page_token=token
        )

    async def CancelWorkflowRun(  # noqa: N802
        self, request: workflow_pb2.CancelWorkflowRunRequest, context: Context
    ) -> workflow_pb2.CancelWorkflowRunResponse:
        reason = validation.reason(request.reason)
        run = await self._visible_run(request.run_id)
        outcome = await workflow_runs.cancel_run(self.pool, run.run_id, reason)
        await push(self.queues, [], Progress(ended=[(job_id, JobStatus.CANCELED) for job_id in outcome.waiting]))
        for cancelled in outcome.cancelled:
            if cancelled.changed:
                metrics.count_cancelled(cancelled.job)
            await self._announce_cancel(cancelled, reason or "workflow run cancelled")
        return workflow_pb2.CancelWorkflowRunResponse(run=workflow_convert.run(outcome.run))
