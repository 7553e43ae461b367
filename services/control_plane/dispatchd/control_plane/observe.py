"""JobService's observe RPCs (observe.proto): logs paged and followed, workers, queue
statistics, cluster status and the live job-event feed (WatchJobs).

Invariants: every answer is read from Postgres (and, for leadership, the Redis lease) at the
time of the call: nothing is cached and nothing is written. The live parts — FollowLogs and
WatchJobs — are fed by one Redis subscription per process (`ObserveEvents`: the job channel,
the job-activity channel and the log-notice channel), fanned out in memory, never one per call,
and held only while some call watches or follows.
A log read is a read of its job: a submitter reads the logs of its own jobs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from dispatchd.control_plane import observe_convert as to_pb
from dispatchd.control_plane import validation
from dispatchd.control_plane.job_feed import Filter, JobFeed
from dispatchd.control_plane.log_follow import LogWakeups, follow
from dispatchd.platform import paging, primacy
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.regions import Region
from dispatchd.platform.security import access
from dispatchd.platform.store import fence, logs, overview
from dispatchd.platform.subscription import Subscription
from dispatchd.v1 import observe_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from dispatchd.platform.config import Settings

Context = grpc.aio.ServicerContext[Any, Any]


# How long the subscription outlives the last watch or follower: a page reload (a new
# EventSource) or the next `dispatchctl watch` finds it still up.
LINGER_SECONDS = 30.0
# How long a new watch waits for the subscription to be confirmed before it goes on anyway
# (its first message then says "subscribed" only once Redis confirmed; see `held`).
READY_SECONDS = 5.0


class ObserveEvents:
    """The process's one subscription for live views: job events to the feed and to log
    followers, log notices to log followers; a lost or renewed subscription tells both.

    It is held only while someone watches or follows (`held`), and for LINGER_SECONDS after:
    every job event reaches every control plane, and parsing them costs ~5-10% of a control
    plane's CPU under load, which nobody should pay while no dashboard or `dispatchctl watch`
    is open.
    """

    def __init__(
        self, queues: ReadyQueues, *, keepalive_seconds: float = 15.0, linger_seconds: float = LINGER_SECONDS
    ) -> None:
        self.feed = JobFeed()
        self.wakeups = LogWakeups(lambda: self.subscription.subscribed)
        self.feed.listeners.append(self.wakeups.on_job_event)
        self.feed.wanted = self.wakeups.following
        self.linger_seconds = linger_seconds
        self._holds = 0
        self._changed = asyncio.Event()
        self._fresh = False  # the subscription (re)started and was not confirmed yet
        keys = queues.keys
        self.subscription = Subscription(
            queues.client,
            name="observe events",
            channels={
                keys.job_channel: self.feed.on_terminal,
                keys.job_activity_channel: self.feed.on_activity,
                keys.log_channel: self.wakeups.on_notice,
            },
            on_reconnect=self._confirmed,
            on_lost=self._interrupted,
            keepalive_seconds=keepalive_seconds,
        )

    def _confirmed(self) -> None:
        if self._fresh:
            # The first confirmation of a new subscription: the watches registered before it
            # were told "subscribed" only after it, so they missed nothing; followers re-read.
            self._fresh = False
            self.wakeups.wake_all()
            return
        self._interrupted()  # a reconnect: events may have been missed meanwhile

    def _interrupted(self) -> None:
        self.feed.interrupted()
        self.wakeups.wake_all()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[bool]:
        """Keep the subscription up while the block runs; yields whether it is confirmed
        (waiting up to READY_SECONDS for that)."""
        self._holds += 1
        self._changed.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_SECONDS):
                    await self.subscription.ready.wait()
            yield self.subscription.subscribed
        finally:
            self._holds -= 1
            self._changed.set()

    async def _wait_changed(self, timeout: float | None = None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    async def run(self) -> None:
        """Subscribe while held (and LINGER_SECONDS after), unsubscribed otherwise; until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._holds:
                await self._wait_changed()
            self._fresh = True
            listening = asyncio.create_task(self.subscription.run(), name="observe-subscription")
            try:
                idle_since: float | None = None
                while idle_since is None or loop.time() - idle_since < self.linger_seconds:
                    if self._holds:
                        idle_since = None
                        await self._wait_changed()
                    else:
                        idle_since = idle_since if idle_since is not None else loop.time()
                        await self._wait_changed(self.linger_seconds - (loop.time() - idle_since))
            finally:
                listening.cancel()
                await asyncio.gather(listening, return_exceptions=True)

    async def close(self) -> None:
        """Shutdown: end every watch and follow, so no open stream holds the server up."""
        self.feed.close()
        self.wakeups.close()


def _log_target(request: observe_pb2.ListLogsRequest | observe_pb2.FollowLogsRequest) -> dict[str, uuid.UUID | None]:
    if bool(request.job_id) == bool(request.execution_id):
        raise InvalidArgument("set job_id or execution_id (exactly one of them)")
    if request.job_id:
        return {"job_id": validation.job_id(request.job_id), "execution_id": None}
    return {"job_id": None, "execution_id": validation.job_id(request.execution_id, "execution_id")}


class ObserveService:
    """Mixed into JobService, which provides these attributes."""

    if TYPE_CHECKING:
        settings: Settings
        pool: asyncpg.Pool
        queues: ReadyQueues
        pages: paging.PageTokens
        observed: ObserveEvents

    async def _open_logs(
        self, request: observe_pb2.ListLogsRequest | observe_pb2.FollowLogsRequest
    ) -> tuple[logs.LogTarget, paging.Listing, int]:
        """The target (NOT_FOUND if missing or not the caller's), its listing, and where to start."""
        of = await logs.target(self.pool, **_log_target(request))
        access.check_owner(of.job_id, of.submitted_by)
        scope = ("execution", str(of.execution_id)) if of.execution_id is not None else ("job", str(of.job_id))
        listing = paging.Listing("logs", scope)
        return of, listing, self.pages.open_sequence(listing, validation.page_token(request.page_token))

    async def ListLogs(  # noqa: N802
        self, request: observe_pb2.ListLogsRequest, context: Context
    ) -> observe_pb2.ListLogsResponse:
        of, listing, after = await self._open_logs(request)
        size = validation.page_size(request.page_size, self.settings)
        rows, more = await logs.page(self.pool, of, after, size)
        last = rows[-1].log_id if rows else after
        return observe_pb2.ListLogsResponse(
            lines=[to_pb.log_line(r) for r in rows],
            next_page_token=self.pages.issue_sequence(listing, last) if more else "",
            resume_token=self.pages.issue_sequence(listing, last) if last else "",
        )

    async def FollowLogs(  # noqa: N802
        self, request: observe_pb2.FollowLogsRequest, context: Context
    ) -> AsyncIterator[observe_pb2.FollowLogsResponse]:
        of, listing, after = await self._open_logs(request)
        async with self.observed.held():
            pages = follow(self.pool, self.observed.wakeups, of, after, self.settings.max_page_size)
            async for rows in pages:
                yield observe_pb2.FollowLogsResponse(
                    lines=[to_pb.log_line(r) for r in rows],
                    resume_token=self.pages.issue_sequence(listing, rows[-1].log_id),
                )

    async def ListWorkers(  # noqa: N802
        self, request: observe_pb2.ListWorkersRequest, context: Context
    ) -> observe_pb2.ListWorkersResponse:
        rows, truncated = await overview.list_workers(
            self.pool, include_offline=request.include_offline, limit=self.settings.max_page_size
        )
        return observe_pb2.ListWorkersResponse(workers=[to_pb.worker(r) for r in rows], truncated=truncated)

    async def GetQueueStats(  # noqa: N802
        self, request: observe_pb2.GetQueueStatsRequest, context: Context
    ) -> observe_pb2.GetQueueStatsResponse:
        rows, as_of = await overview.queue_stats(self.pool, validation.job_type_filter(request.job_type))
        return observe_pb2.GetQueueStatsResponse(
            queues=[to_pb.queue_stats(r, as_of) for r in rows], as_of=to_pb.timestamp(as_of)
        )

    async def GetClusterStatus(  # noqa: N802
        self, request: observe_pb2.GetClusterStatusRequest, context: Context
    ) -> observe_pb2.GetClusterStatusResponse:
        pipe = self.queues.client.pipeline(transaction=False)
        pipe.get(self.queues.keys.leader)
        pipe.pttl(self.queues.keys.leader)
        (holder, remaining_ms), epoch, recorded = await asyncio.gather(
            pipe.execute(), fence.current(self.pool), primacy.read_primacy(self.pool)
        )
        region = Region.from_settings(self.settings)
        return observe_pb2.GetClusterStatusResponse(
            scheduler=to_pb.leadership(holder, int(remaining_ms), epoch),
            region=observe_pb2.RegionStatus(
                name=region.name,
                configured_primary=region.primary,
                recorded_primary=recorded.primary or "",
                epoch=recorded.epoch,
                primary=primacy.may_mutate(region, recorded),
                passive=region.passive,
                database_read_only=recorded.read_only,
            ),
        )

    async def WatchJobs(  # noqa: N802
        self, request: observe_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[observe_pb2.WatchJobsResponse]:
        status = validation.status_filter(request.status)
        flt = Filter(
            job_type=validation.job_type_filter(request.job_type),
            status=None if status is None else int(status),
            job_id=str(validation.job_id(request.job_id)) if request.job_id else None,
        )
        async with self.observed.held():
            with self.observed.feed.watch(flt) as watch:
                yield observe_pb2.WatchJobsResponse(subscribed=True)
                while True:
                    delivery = await watch.next()
                    if delivery is None:
                        return
                    yield observe_pb2.WatchJobsResponse(
                        event=None if delivery.event is None else to_pb.job_event(delivery.event),
                        gap=delivery.gap,
                        missed=delivery.missed,
                    )
