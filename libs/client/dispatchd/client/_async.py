"""`AsyncClient`: the control plane's JobService for asyncio applications.

Invariants: every call carries the bearer token (re-read for each call), a deadline and the
retry policy; a failure leaves as a `DispatchdError` translated in `_call` only; a submit
generates its idempotency key once, before the first try, so a retried submit can never
make a second job.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypedDict, TypeVar, Unpack, cast

import grpc

from dispatchd.client import _requests, _workflows
from dispatchd.client._errors import Unavailable, translate
from dispatchd.client._models import BatchOutcome, DeadLetter, Execution, Job, JobStatus, Page, Redrive, Submission
from dispatchd.client._observe import ObserveCalls
from dispatchd.client._requests import JobOptions, JobSpec, Payload
from dispatchd.client._retry import Retries
from dispatchd.client._schedules import ScheduleCalls
from dispatchd.client._workflows import WorkflowDefinition, WorkflowRun, WorkflowRunStatus
from dispatchd.common import tracing
from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import job_service_pb2 as pb
from dispatchd.v1 import job_service_pb2_grpc as pb_grpc
from dispatchd.v1 import workflow_pb2 as wf_pb

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:50051"
# The server's default limit of jobs per BatchSubmitJobs call (DISPATCHD_MAX_BATCH_SUBMIT).
BATCH_LIMIT = 1000
TARGET_ENV = "DISPATCHD_CONTROL_PLANE_TARGET"
# Well below the server's 300 s cap, so idle proxies and load balancers keep the call open.
_WAIT_CHUNK = dt.timedelta(seconds=60)


class Options(TypedDict, total=False):
    """How a client connects; the keyword arguments of `AsyncClient` and `Client` after the target."""

    security: ClientSecurity
    timeout: dt.timedelta
    retries: Retries


class AsyncClient(ScheduleCalls, ObserveCalls):
    """Submit, inspect, wait for, cancel and list jobs; list and redrive dead letters; register
    workflows, start, read, list and cancel their runs; define and steer schedules
    (`_schedules.ScheduleCalls`); read logs, workers, queues, cluster status and job events
    (`ObserveCalls`).

    `target` defaults to $DISPATCHD_CONTROL_PLANE_TARGET, then 127.0.0.1:50051; `security`
    (token, token file, CA, client certificate) to the DISPATCHD_* environment. `timeout`
    bounds each call; `retries` repeats calls the control plane was not available for.
    """

    def __init__(self, target: str | None = None, **options: Unpack[Options]) -> None:
        self.target = target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
        self.security = options.get("security") or ClientSecurity.from_env()
        self.timeout = options.get("timeout", dt.timedelta(seconds=30))
        self.retries = options.get("retries") or Retries()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.JobServiceStub | None = None

    def _jobs(self) -> pb_grpc.JobServiceStub:
        # The channel belongs to the running event loop, so it is made on first use, not in __init__.
        if self._stub is None:
            self._channel = self.security.aio_channel(self.target)
            self._stub = pb_grpc.JobServiceStub(self._channel)
        return self._stub

    def with_token(self, token: str | None) -> AsyncClient:
        """A client on this one's channel whose calls carry `token` (None: no token) instead of its own.

        For a process acting for many callers (the dashboard): one connection, each call with
        its caller's credentials. Close only the original; the copy shares its channel.
        """
        other = copy.copy(self)
        other.security = dataclasses.replace(self.security, token=token, token_file=None)
        other._stub = self._jobs()
        return other

    async def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        extra: dt.timedelta = dt.timedelta(0),
        retry: bool = True,
    ) -> Resp:
        delays = self.retries.delays() if retry else iter(())
        while True:
            timeout = (self.timeout + extra).total_seconds()
            try:
                # grpc-stubs type the synchronous stub; the aio one returns an awaitable call. The
                # caller's current span (if any) becomes the parent of the server's.
                metadata = tracing.outgoing(self.security.metadata())
                call = cast(Awaitable[Resp], method(request, timeout=timeout, metadata=metadata))
                return await call
            except grpc.RpcError as exc:
                error = translate(exc)
                delay = next(delays, None) if isinstance(error, Unavailable) else None
                if delay is None:
                    raise error from exc
            await asyncio.sleep(delay)

    async def submit(self, job_type: str, payload: Payload = None, **options: Unpack[JobOptions]) -> Submission:
        """Submit one job. Options: priority, idempotency_key, metadata, max_attempts,
        initial_backoff, max_backoff, execution_timeout, delay or run_at. Without an
        `idempotency_key` one is generated (and kept across retries)."""
        request = _requests.submit(job_type, payload, **options)
        reply = await self._call(self._jobs().SubmitJob, request)
        return Submission(Job.from_proto(reply.job), reply.deduplicated)

    async def submit_many(self, jobs: Iterable[JobSpec], *, chunk_size: int = BATCH_LIMIT) -> list[BatchOutcome]:
        """Submit many jobs with BatchSubmitJobs, `chunk_size` per call (at most the server's limit,
        DISPATCHD_MAX_BATCH_SUBMIT). One outcome per job, in order: a refused job is an outcome
        carrying its error, not an exception; a call that fails as a whole raises (the jobs of
        the earlier chunks stay submitted). Keys are generated as by `submit`."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        requests = [_requests.submit(**spec) for spec in jobs]
        outcomes: list[BatchOutcome] = []
        for start in range(0, len(requests), chunk_size):
            batch = pb.BatchSubmitJobsRequest(jobs=requests[start : start + chunk_size])
            reply = await self._call(self._jobs().BatchSubmitJobs, batch)
            outcomes.extend(BatchOutcome.from_proto(result) for result in reply.results)
        return outcomes

    async def get(self, job_id: str) -> Job:
        reply = await self._call(self._jobs().GetJob, pb.GetJobRequest(job_id=job_id))
        return Job.from_proto(reply.job)

    async def cancel(self, job_id: str, *, reason: str = "") -> Job:
        reply = await self._call(self._jobs().CancelJob, pb.CancelJobRequest(job_id=job_id, reason=reason))
        return Job.from_proto(reply.job)

    async def wait(self, job_id: str, timeout: dt.timedelta | None = None) -> Job:
        """The job once it is terminal, or as it is when `timeout` passed (None: no limit);
        check `job.status.terminal`. Long waits are a series of calls (the server caps one)."""
        deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
        while True:
            chunk = _WAIT_CHUNK
            if deadline is not None:
                chunk = min(chunk, dt.timedelta(seconds=max(0.0, deadline - time.monotonic())))
            request = pb.WaitJobRequest(job_id=job_id, timeout=_requests.duration(chunk))
            reply = await self._call(self._jobs().WaitJob, request, extra=chunk)
            if reply.terminal or (deadline is not None and time.monotonic() >= deadline):
                return Job.from_proto(reply.job)

    async def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        job_type: str | None = None,
        page_size: int | None = None,
        page_token: str = "",
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Page[Job]:
        """One page of jobs, newest first; `status` is a JobStatus or its name ("running");
        `since` (inclusive) and `until` (exclusive) bound when they were created."""
        request = pb.ListJobsRequest(
            status=_requests.job_status(status),
            job_type=job_type or "",
            page_size=page_size or 0,
            page_token=page_token,
            idempotency_key=idempotency_key or "",
        )
        if since is not None:
            request.created_after.CopyFrom(_requests.timestamp(since))
        if until is not None:
            request.created_before.CopyFrom(_requests.timestamp(until))
        reply = await self._call(self._jobs().ListJobs, request)
        return Page(tuple(Job.from_proto(j) for j in reply.jobs), reply.next_page_token)

    async def iter_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        job_type: str | None = None,
        page_size: int | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncGenerator[Job, None]:
        """Every matching job, newest first, fetching one keyset page at a time."""
        async for job in _follow(
            lambda token: self.list_jobs(
                status=status,
                job_type=job_type,
                page_size=page_size,
                page_token=token,
                since=since,
                until=until,
                idempotency_key=idempotency_key,
            )
        ):
            yield job

    async def executions(self, job_id: str) -> list[Execution]:
        """Every attempt of the job, first attempt first."""
        request = pb.ListExecutionsRequest(job_id=job_id)
        found: list[Execution] = []
        while True:
            reply = await self._call(self._jobs().ListExecutions, request)
            found.extend(Execution.from_proto(e) for e in reply.executions)
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    async def dead_letters(
        self,
        *,
        job_type: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int | None = None,
        page_token: str = "",
    ) -> Page[DeadLetter]:
        """One page of dead-lettered jobs, newest first (`since` inclusive, `until` exclusive)."""
        request = pb.ListDeadLettersRequest(
            filter=_requests.dead_letter_filter(job_type, since, until),
            page_size=page_size or 0,
            page_token=page_token,
        )
        reply = await self._call(self._jobs().ListDeadLetters, request)
        return Page(tuple(DeadLetter.from_proto(d) for d in reply.dead_letters), reply.next_page_token)

    async def iter_dead_letters(
        self,
        *,
        job_type: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncGenerator[DeadLetter, None]:
        """Every matching dead letter, newest first, one page at a time."""
        async for letter in _follow(
            lambda token: self.dead_letters(
                job_type=job_type, since=since, until=until, page_size=page_size, page_token=token
            )
        ):
            yield letter

    async def redrive(self, job_ids: Iterable[str], *, reason: str = "") -> Redrive:
        """A new attempt, with a fresh attempt budget, for each named dead-lettered job.

        Not retried: had a lost reply's redrive happened, the retry would report its jobs as skipped.
        """
        request = pb.RedriveJobsRequest(job_ids=list(job_ids), reason=reason)
        if not request.job_ids:
            raise ValueError("name at least one job; redrive_matching selects dead letters by filter")
        return Redrive.from_proto(await self._call(self._jobs().RedriveJobs, request, retry=False))

    async def redrive_matching(
        self,
        *,
        job_type: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
        reason: str = "",
    ) -> Redrive:
        """Redrive the dead letters the filter selects (no filter: every one), oldest first, at
        most `limit`; `Redrive.more` says whether matching ones remain."""
        request = pb.RedriveJobsRequest(
            filter=_requests.dead_letter_filter(job_type, since, until), limit=limit or 0, reason=reason
        )
        return Redrive.from_proto(await self._call(self._jobs().RedriveJobs, request, retry=False))

    # -- workflows (dispatchd.client._workflows)

    async def register_workflow(self, definition: Mapping[str, Any]) -> tuple[WorkflowDefinition, bool]:
        """Register a definition document (as a YAML file holds it); whether it is a new version."""
        request = wf_pb.RegisterWorkflowRequest(definition=_workflows.definition_message(definition))
        reply = await self._call(self._jobs().RegisterWorkflow, request)
        return WorkflowDefinition.from_proto(reply.definition), reply.created

    async def workflows(self, name: str | None = None) -> list[WorkflowDefinition]:
        """The latest version of every workflow, or every version of `name` (newest first)."""
        reply = await self._call(self._jobs().ListWorkflows, wf_pb.ListWorkflowsRequest(name=name or ""))
        return [WorkflowDefinition.from_proto(d) for d in reply.definitions]

    async def start_workflow(
        self, name: str, run_input: Any = None, *, version: int | None = None, idempotency_key: str | None = None
    ) -> tuple[WorkflowRun, bool]:
        """Start a run (of the latest version unless `version`); the run and whether it was deduplicated."""
        request = _workflows.start_request(name, run_input, version=version, idempotency_key=idempotency_key)
        reply = await self._call(self._jobs().StartWorkflowRun, request)
        return WorkflowRun.from_proto(reply.run), reply.deduplicated

    async def workflow_run(self, run_id: str) -> WorkflowRun:
        """A run with every step's status, attempts and timing."""
        reply = await self._call(self._jobs().GetWorkflowRun, wf_pb.GetWorkflowRunRequest(run_id=run_id))
        return WorkflowRun.from_proto(reply.run)

    async def workflow_runs(
        self,
        *,
        name: str | None = None,
        status: WorkflowRunStatus | str | None = None,
        page_size: int | None = None,
        page_token: str = "",
    ) -> Page[WorkflowRun]:
        """One page of runs, newest first (without their steps)."""
        request = wf_pb.ListWorkflowRunsRequest(
            workflow_name=name or "",
            status=_workflows.run_status(status),
            page_size=page_size or 0,
            page_token=page_token,
        )
        reply = await self._call(self._jobs().ListWorkflowRuns, request)
        return Page(tuple(WorkflowRun.from_proto(r) for r in reply.runs), reply.next_page_token)

    async def cancel_workflow(self, run_id: str, *, reason: str = "") -> WorkflowRun:
        """Cancel a run and its active steps."""
        request = wf_pb.CancelWorkflowRunRequest(run_id=run_id, reason=reason)
        reply = await self._call(self._jobs().CancelWorkflowRun, request)
        return WorkflowRun.from_proto(reply.run)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _follow(fetch: Callable[[str], Awaitable[Page[T]]]) -> AsyncGenerator[T, None]:
    """The items of every page, from the first: `fetch(token)` returns the page at `token`."""
    token = ""
    while True:
        page = await fetch(token)
        for item in page.items:
            yield item
        if not page.next_page_token:
            return
        token = page.next_page_token
