"""The observe calls of `AsyncClient`: logs (paged and followed), workers, queues, cluster
status and the live job-event feed.

Invariants: unary calls go through `AsyncClient._call` (token, deadline, retries, error
translation); the two streams carry the token but no deadline (they last as long as the
caller reads), fail as a `DispatchdError`, and are cancelled on the server as soon as the
caller stops iterating.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from dispatchd.client import _requests
from dispatchd.client._errors import translate
from dispatchd.client._models import JobStatus
from dispatchd.client._observe_models import ClusterStatus, JobEvent, LogLine, LogPage, QueueStats, Worker
from dispatchd.common import tracing
from dispatchd.v1 import observe_pb2

if TYPE_CHECKING:
    from dispatchd.common.security import ClientSecurity
    from dispatchd.v1 import job_service_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class ObserveCalls:
    """Mixed into `AsyncClient`; see the module docstring."""

    if TYPE_CHECKING:
        security: ClientSecurity

        def _jobs(self) -> pb_grpc.JobServiceStub: ...

        async def _call(
            self,
            method: grpc.UnaryUnaryMultiCallable[Req, Resp],
            request: Req,
            *,
            extra: dt.timedelta = ...,
            retry: bool = ...,
        ) -> Resp: ...

    async def _stream(self, method: Callable[..., Any], request: Any) -> AsyncGenerator[Any, None]:
        call = method(request, metadata=tracing.outgoing(self.security.metadata()))
        try:
            async for reply in cast(AsyncIterator[Any], call):
                yield reply
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()

    async def list_logs(
        self,
        job_id: str | None = None,
        *,
        execution_id: str | None = None,
        page_size: int | None = None,
        page_token: str = "",
    ) -> LogPage:
        """One page of stored log lines of a job (every attempt) or of one execution, oldest first."""
        request = observe_pb2.ListLogsRequest(
            job_id=job_id or "", execution_id=execution_id or "", page_size=page_size or 0, page_token=page_token
        )
        reply = await self._call(self._jobs().ListLogs, request)
        return LogPage(tuple(LogLine.from_proto(x) for x in reply.lines), reply.next_page_token, reply.resume_token)

    async def iter_logs(
        self, job_id: str | None = None, *, execution_id: str | None = None, page_size: int | None = None
    ) -> AsyncGenerator[LogLine, None]:
        """Every line stored now, oldest first, one page at a time."""
        token = ""
        while True:
            page = await self.list_logs(job_id, execution_id=execution_id, page_size=page_size, page_token=token)
            for line in page.lines:
                yield line
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def follow_logs(
        self, job_id: str | None = None, *, execution_id: str | None = None, page_token: str = ""
    ) -> AsyncGenerator[LogLine, None]:
        """The stored lines, then each new one as it is stored; ends once the job (or the
        execution) is terminal and every line was delivered."""
        request = observe_pb2.FollowLogsRequest(
            job_id=job_id or "", execution_id=execution_id or "", page_token=page_token
        )
        async for reply in self._stream(self._jobs().FollowLogs, request):
            for line in reply.lines:
                yield LogLine.from_proto(line)

    async def workers(self, *, include_offline: bool = False) -> list[Worker]:
        """Connected workers by id (with `include_offline`, also those whose stream ended)."""
        reply = await self._call(
            self._jobs().ListWorkers, observe_pb2.ListWorkersRequest(include_offline=include_offline)
        )
        return [Worker.from_proto(w) for w in reply.workers]

    async def queue_stats(self, *, job_type: str | None = None) -> list[QueueStats]:
        """Per job type with work: due depth, the oldest due one's age, delayed and running counts."""
        reply = await self._call(self._jobs().GetQueueStats, observe_pb2.GetQueueStatsRequest(job_type=job_type or ""))
        return [QueueStats.from_proto(q) for q in reply.queues]

    async def cluster_status(self) -> ClusterStatus:
        """Scheduler leadership and this region's primacy, as the control plane sees them."""
        return ClusterStatus.from_proto(
            await self._call(self._jobs().GetClusterStatus, observe_pb2.GetClusterStatusRequest())
        )

    async def watch(
        self,
        *,
        job_type: str | None = None,
        status: JobStatus | str | None = None,
        job_id: str | None = None,
    ) -> AsyncGenerator[JobEvent, None]:
        """Job events as they happen (first a `subscribed` message without an event); runs
        until the caller stops iterating. `gap` on a message means events were lost before it."""
        request = observe_pb2.WatchJobsRequest(
            job_type=job_type or "", status=_requests.job_status(status), job_id=job_id or ""
        )
        async for reply in self._stream(self._jobs().WatchJobs, request):
            yield JobEvent.from_proto(reply)
