"""JobService: submit (one job or a batch), inspect, list, cancel and wait for jobs; list and
redrive dead letters; workflows (`workflows.WorkflowMethods`); schedules
(`schedules.ScheduleMethods`); the observe RPCs (`observe.ObserveService`). Submits are
group-committed by `submits.Submitter`.

Postgres decides every outcome. Redis only speeds things up (ready queues, cancel and job
events), so a Redis failure after the Postgres write is logged, never returned: the
scheduler re-queues due executions from Postgres and the settle guards reject results of
cancelled executions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

import asyncpg
import grpc
from opentelemetry import trace

from dispatchd.common import tracing
from dispatchd.control_plane import convert, validation
from dispatchd.control_plane.observe import ObserveEvents, ObserveService
from dispatchd.control_plane.schedules import ScheduleMethods
from dispatchd.control_plane.submits import REDIS_BUDGET_SECONDS, Outcome, Submitter
from dispatchd.control_plane.waiters import JobWaiters, wait_for_terminal
from dispatchd.control_plane.workflows import WorkflowMethods, push
from dispatchd.platform import metrics, paging
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.job_events import JobEvent, Kind
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.security import access
from dispatchd.platform.store import dead_letters, jobs, submits
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc

log = logging.getLogger("dispatchd.control_plane")

Context = grpc.aio.ServicerContext[Any, Any]


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclasses.dataclass(eq=False)  # identity semantics, as a plain class: one per server
class JobService(ScheduleMethods, WorkflowMethods, ObserveService, job_service_pb2_grpc.JobServiceServicer):
    settings: Settings
    pool: asyncpg.Pool
    queues: ReadyQueues
    waiters: JobWaiters
    pages: paging.PageTokens
    submitter: Submitter = dataclasses.field(init=False)
    # The subscription feeding FollowLogs and WatchJobs; its `run` is a task of the server.
    observed: ObserveEvents = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.submitter = Submitter(self.pool, self.queues)
        self.observed = ObserveEvents(self.queues)

    def _new_job(self, request: job_service_pb2.SubmitJobRequest, submitted_by: str | None) -> submits.NewJob:
        # The call's span context: every attempt's spans join its trace.
        trace_context = (tracing.current_carrier() or None) if tracing.enabled() else None
        return validation.new_job(request, self.settings, submitted_by, trace_context)

    async def SubmitJob(  # noqa: N802
        self, request: job_service_pb2.SubmitJobRequest, context: Context
    ) -> job_service_pb2.SubmitJobResponse:
        (outcome,) = await self.submitter.submit([self._new_job(request, access.submitter())])
        if isinstance(outcome, Exception):
            raise outcome
        if tracing.enabled() and (span := trace.get_current_span()).is_recording():
            span.set_attributes(
                {
                    tracing.JOB_ID: str(outcome.job.job_id),
                    tracing.JOB_TYPE: outcome.job.job_type,
                    "dispatchd.deduplicated": outcome.deduplicated,
                }
            )
        return job_service_pb2.SubmitJobResponse(job=convert.job(outcome.job), deduplicated=outcome.deduplicated)

    async def BatchSubmitJobs(  # noqa: N802
        self, request: job_service_pb2.BatchSubmitJobsRequest, context: Context
    ) -> job_service_pb2.BatchSubmitJobsResponse:
        count, limit = len(request.jobs), self.settings.max_batch_submit
        if not 1 <= count <= limit:
            raise InvalidArgument(f"jobs has {count} entries; send 1 to {limit} jobs in one call")
        submitted_by = access.submitter()
        outcomes: list[Outcome | None] = [None] * count
        news: list[submits.NewJob] = []
        for i, job in enumerate(request.jobs):
            try:
                news.append(self._new_job(job, submitted_by))
            except InvalidArgument as exc:  # this job only; the others go on
                outcomes[i] = exc
        # Raises (the whole call fails, nothing stored) when the transaction could not commit.
        stored = iter(await self.submitter.submit(news) if news else ())
        return job_service_pb2.BatchSubmitJobsResponse(
            results=[convert.batch_result(outcome if outcome is not None else next(stored)) for outcome in outcomes]
        )

    async def ListDeadLetters(  # noqa: N802
        self, request: job_service_pb2.ListDeadLettersRequest, context: Context
    ) -> job_service_pb2.ListDeadLettersResponse:
        flt = validation.dead_letter_filter(request.filter)
        listing = paging.Listing("dead-letters", (flt.job_type, _iso(flt.since), _iso(flt.until)))
        letters, last = await dead_letters.list_dead_letters(
            self.pool,
            flt,
            page_size=validation.page_size(request.page_size, self.settings),
            after=self.pages.open_time_id(listing, validation.page_token(request.page_token)),
        )
        return job_service_pb2.ListDeadLettersResponse(
            dead_letters=[
                job_service_pb2.DeadLetter(job=convert.job(d.job), execution=convert.execution(d.execution))
                for d in letters
            ],
            next_page_token="" if last is None else self.pages.issue_time_id(listing, *last),
        )

    async def RedriveJobs(  # noqa: N802
        self, request: job_service_pb2.RedriveJobsRequest, context: Context
    ) -> job_service_pb2.RedriveJobsResponse:
        ids = validation.redrive_ids(list(request.job_ids))
        reason = validation.reason(request.reason)
        more = False
        if ids:
            if request.HasField("filter") or request.limit:
                raise InvalidArgument("name job_ids or a filter (with a limit), not both")
        else:
            if not request.HasField("filter"):
                raise InvalidArgument("name the jobs to redrive in job_ids, or select dead letters with a filter")
            limit = validation.redrive_limit(request.limit, self.settings)
            flt = validation.dead_letter_filter(request.filter)
            ids = await dead_letters.matching(self.pool, flt, limit + 1)
            more, ids = len(ids) > limit, ids[:limit]
        redriven: list[dead_letters.Redriven] = []
        skipped: list[job_service_pb2.RedriveSkipped] = []
        for job_id in ids:
            outcome = await dead_letters.redrive(self.pool, job_id)
            if isinstance(outcome, str):
                skipped.append(job_service_pb2.RedriveSkipped(job_id=str(job_id), reason=outcome))
            else:
                metrics.for_type(outcome.job.job_type).redriven.inc()
                redriven.append(outcome)
        if redriven:
            log.info(
                "redrove %d dead-lettered job(s)",
                len(redriven),
                extra={"fields": {"jobs": [str(r.job.job_id) for r in redriven], "reason": reason}},
            )
            try:
                async with asyncio.timeout(REDIS_BUDGET_SECONDS):
                    activity = [
                        JobEvent(str(r.job.job_id), r.job.job_type, Kind.REDRIVEN, int(r.job.status), r.job.attempts)
                        for r in redriven
                    ]
                    await self.queues.enqueue([r.queued for r in redriven], activity)
            except Exception as exc:  # queued in Postgres; the scheduler pushes them
                metrics.count_store_error(exc, "redis")
                log.warning("could not push redriven jobs to their ready queues (the scheduler will): %s", exc)
            for done in redriven:  # a workflow step: its run resumed
                await push(self.queues, [], done.progress)
        return job_service_pb2.RedriveJobsResponse(
            redriven=[convert.job(r.job) for r in redriven], skipped=skipped, more=more
        )

    async def GetJob(  # noqa: N802
        self, request: job_service_pb2.GetJobRequest, context: Context
    ) -> job_service_pb2.GetJobResponse:
        row = await jobs.get(self.pool, validation.job_id(request.job_id))
        access.check_owner(row.job_id, row.submitted_by)
        return job_service_pb2.GetJobResponse(job=convert.job(row))

    async def ListJobs(  # noqa: N802
        self, request: job_service_pb2.ListJobsRequest, context: Context
    ) -> job_service_pb2.ListJobsResponse:
        status = validation.status_filter(request.status)
        job_type = validation.job_type_filter(request.job_type)
        owner = access.owner_filter()
        after, before = validation.created_range(request)
        key = validation.idempotency_key_filter(request.idempotency_key)
        selection = (*(None if t is None else t.isoformat() for t in (after, before)), key)
        listing = paging.Listing("jobs", (None if status is None else int(status), job_type, owner, *selection))
        rows, last = await jobs.list_jobs(
            self.pool,
            status=status,
            job_type=job_type,
            created=(after, before),
            idempotency_key=key,
            page_size=validation.page_size(request.page_size, self.settings),
            after=self.pages.open_time_id(listing, validation.page_token(request.page_token)),
            submitted_by=owner,
        )
        token = "" if last is None else self.pages.issue_time_id(listing, *last)
        return job_service_pb2.ListJobsResponse(jobs=[convert.job(r) for r in rows], next_page_token=token)

    async def ListExecutions(  # noqa: N802
        self, request: job_service_pb2.ListExecutionsRequest, context: Context
    ) -> job_service_pb2.ListExecutionsResponse:
        job_id = validation.job_id(request.job_id)
        await self._check_visible(job_id)
        listing = paging.Listing("executions", (str(job_id),))
        rows, last = await jobs.list_executions(
            self.pool,
            job_id,
            page_size=validation.page_size(request.page_size, self.settings),
            after=self.pages.open_attempt(listing, validation.page_token(request.page_token)),
        )
        token = "" if last is None else self.pages.issue_attempt(listing, last)
        return job_service_pb2.ListExecutionsResponse(
            executions=[convert.execution(r) for r in rows], next_page_token=token
        )

    async def _check_visible(self, job_id: uuid.UUID) -> None:
        """NOT_FOUND when the caller may read only its own jobs and this is not one of them."""
        if access.owner_filter() is not None:
            row = await jobs.get(self.pool, job_id)
            access.check_owner(job_id, row.submitted_by)

    async def CancelJob(  # noqa: N802
        self, request: job_service_pb2.CancelJobRequest, context: Context
    ) -> job_service_pb2.CancelJobResponse:
        job_id = validation.job_id(request.job_id)
        reason = validation.reason(request.reason)
        cancelled = await jobs.cancel(self.pool, job_id, reason)
        if cancelled.changed:
            metrics.count_cancelled(cancelled.job)
        if cancelled.stopped or cancelled.changed:
            await self._announce_cancel(cancelled, reason or "job cancelled")
        await push(self.queues, [], cancelled.progress)  # a workflow step: its run moved on
        return job_service_pb2.CancelJobResponse(job=convert.job(cancelled.job))

    async def _announce_cancel(self, cancelled: jobs.Cancelled, reason: str) -> None:
        try:
            async with asyncio.timeout(REDIS_BUDGET_SECONDS):
                for execution_id, worker_id in cancelled.stopped:
                    await self.queues.publish_cancel(str(execution_id), worker_id, reason)
                if cancelled.changed:
                    job = cancelled.job
                    await self.queues.publish_job_event(str(job.job_id), int(job.status), job.job_type)
        except Exception as exc:  # cancelled in Postgres; a late result is rejected by the settle guard
            metrics.count_store_error(exc, "redis")
            log.warning("could not announce the cancellation of job %s: %s", cancelled.job.job_id, _describe(exc))

    async def WaitJob(  # noqa: N802
        self, request: job_service_pb2.WaitJobRequest, context: Context
    ) -> job_service_pb2.WaitJobResponse:
        job_id = validation.job_id(request.job_id)
        timeout = validation.wait_timeout(request)
        await self._check_visible(job_id)
        row, terminal = await wait_for_terminal(self.pool, self.waiters, job_id, timeout)
        return job_service_pb2.WaitJobResponse(job=convert.job(row), terminal=terminal)
