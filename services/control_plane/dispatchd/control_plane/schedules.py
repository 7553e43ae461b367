"""JobService's schedule methods: define, read, list, pause, resume and delete schedules, and
list their fires. Mixed into `servicer.JobService`.

Invariant: Postgres holds every schedule and fire; after each change the control plane
announces it on the schedules channel so the scheduler leader re-reads its next fire time at
once. The notice only shortens the leader's sleep: if it is lost, the leader's bounded sleep
still ends, and nothing fires late by more than that bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import grpc

from dispatchd.control_plane import schedule_defs, validation
from dispatchd.control_plane.submits import REDIS_BUDGET_SECONDS
from dispatchd.platform import metrics, paging
from dispatchd.platform.config import Settings
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.security import access
from dispatchd.platform.store import schedules
from dispatchd.v1 import schedule_pb2

log = logging.getLogger("dispatchd.control_plane.schedules")

Context = grpc.aio.ServicerContext[Any, Any]


async def announce_change(queues: ReadyQueues, name: str) -> None:
    """Wake the scheduler leader: a schedule changed (best effort, see the module docstring)."""
    try:
        async with asyncio.timeout(REDIS_BUDGET_SECONDS):
            await queues.client.publish(queues.keys.schedules_channel, name)
    except Exception as exc:
        metrics.count_store_error(exc, "redis")
        log.warning("could not announce the change of schedule %s: %s", name, exc)


class ScheduleMethods:
    """The schedule RPCs; the servicer provides the attributes below."""

    settings: Settings
    pool: asyncpg.Pool
    queues: ReadyQueues
    pages: paging.PageTokens

    async def CreateSchedule(  # noqa: N802
        self, request: schedule_pb2.CreateScheduleRequest, context: Context
    ) -> schedule_pb2.CreateScheduleResponse:
        d = schedule_defs.definition(request.schedule, self.settings, access.submitter())
        async with self.pool.acquire() as conn, conn.transaction():
            await schedule_defs.check_workflow(conn, d)
            row, created = await schedules.put(conn, d)
        await announce_change(self.queues, row.name)
        return schedule_pb2.CreateScheduleResponse(schedule=schedule_defs.to_wire(row), created=created)

    async def GetSchedule(  # noqa: N802
        self, request: schedule_pb2.GetScheduleRequest, context: Context
    ) -> schedule_pb2.GetScheduleResponse:
        count = schedule_defs.next_fire_count(request.next_fire_count)
        row = await schedules.get(self.pool, schedule_defs.name(request.name))
        return schedule_pb2.GetScheduleResponse(schedule=schedule_defs.to_wire(row, count))

    async def ListSchedules(  # noqa: N802
        self, request: schedule_pb2.ListSchedulesRequest, context: Context
    ) -> schedule_pb2.ListSchedulesResponse:
        size = validation.page_size(request.page_size, self.settings)
        listing = paging.Listing("schedules", ())
        rows = await schedules.list_schedules(
            self.pool, page_size=size, after=self.pages.open_time_id(listing, validation.page_token(request.page_token))
        )
        page = rows[:size]
        token = self.pages.issue_time_id(listing, page[-1].created_at, page[-1].schedule_id) if len(rows) > size else ""
        return schedule_pb2.ListSchedulesResponse(
            schedules=[schedule_defs.to_wire(r) for r in page], next_page_token=token
        )

    async def _set_paused(self, name: str, paused: bool) -> schedule_pb2.Schedule:
        row = await schedules.set_paused(self.pool, schedule_defs.name(name), paused)
        await announce_change(self.queues, row.name)
        return schedule_defs.to_wire(row)

    async def PauseSchedule(  # noqa: N802
        self, request: schedule_pb2.PauseScheduleRequest, context: Context
    ) -> schedule_pb2.PauseScheduleResponse:
        return schedule_pb2.PauseScheduleResponse(schedule=await self._set_paused(request.name, True))

    async def ResumeSchedule(  # noqa: N802
        self, request: schedule_pb2.ResumeScheduleRequest, context: Context
    ) -> schedule_pb2.ResumeScheduleResponse:
        return schedule_pb2.ResumeScheduleResponse(schedule=await self._set_paused(request.name, False))

    async def DeleteSchedule(  # noqa: N802
        self, request: schedule_pb2.DeleteScheduleRequest, context: Context
    ) -> schedule_pb2.DeleteScheduleResponse:
        name = schedule_defs.name(request.name)
        deleted = await schedules.delete(self.pool, [name])
        if deleted:
            await announce_change(self.queues, name)
        return schedule_pb2.DeleteScheduleResponse(deleted=bool(deleted))

    async def ListScheduleFires(  # noqa: N802
        self, request: schedule_pb2.ListScheduleFiresRequest, context: Context
    ) -> schedule_pb2.ListScheduleFiresResponse:
        row = await schedules.get(self.pool, schedule_defs.name(request.name))
        size = validation.page_size(request.page_size, self.settings)
        listing = paging.Listing("schedule-fires", (str(row.schedule_id),))
        after = self.pages.open_time_id(listing, validation.page_token(request.page_token))
        fires = await schedules.list_fires(
            self.pool, row.schedule_id, page_size=size, before=None if after is None else after[0]
        )
        page = fires[:size]
        token = self.pages.issue_time_id(listing, page[-1].fire_time, row.schedule_id) if len(fires) > size else ""
        return schedule_pb2.ListScheduleFiresResponse(
            fires=[schedule_defs.fire(f) for f in page], next_page_token=token
        )
