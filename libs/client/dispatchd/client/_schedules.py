"""Schedules in the client: define, read, list, pause, resume and delete them; list their fires.

Invariant: these are thin calls of the JobService schedule RPCs through the AsyncClient's one
`_call` (token, deadline, retries, error translation), mixed into AsyncClient; `Client` gets
the same methods blocking. A schedule's job template takes the options of `submit` that make
sense for a job started later (no idempotency key, delay or run_at: each fire is its own job).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack, cast

from dispatchd.client import _requests
from dispatchd.client._requests import Payload
from dispatchd.v1 import common_pb2
from dispatchd.v1 import schedule_pb2 as pb

if TYPE_CHECKING:
    from dispatchd.client._async import AsyncClient

CatchUp = Literal["skip", "once", "all"]
Overlap = Literal["allow", "skip"]


class ScheduleOptions(TypedDict, total=False):
    """The keyword arguments of `put_schedule` besides the name, timing and job type."""

    time_zone: str
    payload: Payload
    catch_up: CatchUp
    catch_up_limit: int
    overlap: Overlap
    paused: bool
    priority: int
    metadata: Mapping[str, str] | None
    max_attempts: int | None
    initial_backoff: dt.timedelta | None
    max_backoff: dt.timedelta | None
    execution_timeout: dt.timedelta | None
    workflow_version: int
    workflow_input: Payload


@dataclass(frozen=True)
class ScheduleFire:
    fire_time: dt.datetime
    fired_at: dt.datetime | None
    job_id: str  # the job it started ("" for a workflow target)
    run_id: str  # the workflow run it started ("" for a job target)
    error: str  # why it started nothing; all three "": the overlap policy skipped it

    @classmethod
    def from_proto(cls, f: pb.ScheduleFire) -> ScheduleFire:
        fired_at = f.fired_at.ToDatetime(tzinfo=dt.UTC) if f.HasField("fired_at") else None
        return cls(f.fire_time.ToDatetime(tzinfo=dt.UTC), fired_at, f.job_id, f.run_id, f.error)


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str | None
    interval: dt.timedelta | None
    time_zone: str
    job_type: str  # "" for a workflow schedule
    workflow_name: str  # "" for a job schedule
    catch_up: CatchUp
    catch_up_limit: int
    overlap: Overlap
    paused: bool
    source: str
    next_fire_times: tuple[dt.datetime, ...]
    last_fire: ScheduleFire | None
    raw: pb.Schedule = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, s: pb.Schedule) -> Schedule:
        return cls(
            name=s.name,
            cron=s.cron if s.WhichOneof("timing") == "cron" else None,
            interval=s.interval.ToTimedelta() if s.WhichOneof("timing") == "interval" else None,
            time_zone=s.time_zone,
            job_type=s.job.job_type,
            workflow_name=s.workflow.workflow_name,
            catch_up=cast(CatchUp, pb.CatchUpPolicy.Name(s.catch_up).removeprefix("CATCH_UP_POLICY_").lower()),
            catch_up_limit=s.catch_up_limit,
            overlap=cast(Overlap, pb.OverlapPolicy.Name(s.overlap).removeprefix("OVERLAP_POLICY_").lower()),
            paused=s.paused,
            source=s.source,
            next_fire_times=tuple(t.ToDatetime(tzinfo=dt.UTC) for t in s.next_fire_times),
            last_fire=ScheduleFire.from_proto(s.last_fire) if s.HasField("last_fire") else None,
            raw=s,
        )


def _job(job_type: str, options: ScheduleOptions) -> pb.ScheduleJobTarget:
    submit = _requests.submit(
        job_type, options.get("payload"), priority=options.get("priority", 0), metadata=options.get("metadata"),
        max_attempts=options.get("max_attempts"), initial_backoff=options.get("initial_backoff"),
        max_backoff=options.get("max_backoff"), execution_timeout=options.get("execution_timeout"),
    )
    job = pb.ScheduleJobTarget(job_type=job_type, payload=submit.payload, priority=submit.priority,
                               metadata=dict(submit.metadata))
    if submit.retry_policy != common_pb2.RetryPolicy():
        job.retry_policy.CopyFrom(submit.retry_policy)
    if submit.HasField("execution_timeout"):
        job.execution_timeout.CopyFrom(submit.execution_timeout)
    return job


def schedule_request(
    name: str,
    job_type: str | None,
    *,
    workflow: str | None,
    cron: str | None,
    interval: dt.timedelta | None,
    **options: Unpack[ScheduleOptions],
) -> pb.Schedule:
    """The Schedule message for `put_schedule` (one of cron and interval; one of job_type and workflow)."""
    if (cron is None) == (interval is None):
        raise ValueError("give cron or interval, not both or neither")
    if (job_type is None) == (workflow is None):
        raise ValueError("give job_type or workflow, not both or neither")
    schedule = pb.Schedule(
        name=name, time_zone=options.get("time_zone", ""),
        catch_up=pb.CatchUpPolicy.Value("CATCH_UP_POLICY_" + options.get("catch_up", "skip").upper()),
        catch_up_limit=options.get("catch_up_limit", 0),
        overlap=pb.OverlapPolicy.Value("OVERLAP_POLICY_" + options.get("overlap", "allow").upper()),
        paused=options.get("paused", False),
    )
    if workflow is not None:
        schedule.workflow.CopyFrom(pb.ScheduleWorkflowTarget(
            workflow_name=workflow, workflow_version=options.get("workflow_version", 0),
            input=_requests.encode_payload(options.get("workflow_input")),
        ))
    else:
        assert job_type is not None
        schedule.job.CopyFrom(_job(job_type, options))
    if cron is not None:
        schedule.cron = cron
    else:
        assert interval is not None
        schedule.interval.CopyFrom(_requests.duration(interval))
    return schedule


class ScheduleCalls:
    """The schedule methods of AsyncClient (and, blocking, of Client)."""

    async def put_schedule(
        self, name: str, job_type: str | None = None, *, workflow: str | None = None, cron: str | None = None,
        interval: dt.timedelta | None = None, **options: Unpack[ScheduleOptions],
    ) -> tuple[Schedule, bool]:
        """Create the schedule, or replace the one of this name; returns it and whether it is new.
        Each fire submits a job of `job_type`, or starts a run of the registered `workflow`.
        Options: time_zone, catch_up ("skip", "once", "all"), catch_up_limit, overlap ("allow",
        "skip"), paused; the job's payload, priority, metadata, max_attempts, initial_backoff,
        max_backoff, execution_timeout; the run's workflow_version (0: latest), workflow_input."""
        client = cast("AsyncClient", self)
        schedule = schedule_request(name, job_type, workflow=workflow, cron=cron, interval=interval, **options)
        request = pb.CreateScheduleRequest(schedule=schedule)
        reply = await client._call(client._jobs().CreateSchedule, request)
        return Schedule.from_proto(reply.schedule), reply.created

    async def get_schedule(self, name: str, *, next_fires: int = 5) -> Schedule:
        client = cast("AsyncClient", self)
        reply = await client._call(client._jobs().GetSchedule, pb.GetScheduleRequest(name=name,
                                                                                       next_fire_count=next_fires))
        return Schedule.from_proto(reply.schedule)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, oldest first (all pages)."""
        client = cast("AsyncClient", self)
        found, token = [], ""
        while True:
            reply = await client._call(client._jobs().ListSchedules, pb.ListSchedulesRequest(page_token=token))
            found += [Schedule.from_proto(s) for s in reply.schedules]
            token = reply.next_page_token
            if not token:
                return found

    async def pause_schedule(self, name: str) -> Schedule:
        client = cast("AsyncClient", self)
        reply = await client._call(client._jobs().PauseSchedule, pb.PauseScheduleRequest(name=name))
        return Schedule.from_proto(reply.schedule)

    async def resume_schedule(self, name: str) -> Schedule:
        """Resume from now: fire times while it was paused are not caught up."""
        client = cast("AsyncClient", self)
        reply = await client._call(client._jobs().ResumeSchedule, pb.ResumeScheduleRequest(name=name))
        return Schedule.from_proto(reply.schedule)

    async def delete_schedule(self, name: str) -> bool:
        """Delete it (its jobs stay); False if there was none of this name."""
        client = cast("AsyncClient", self)
        reply = await client._call(client._jobs().DeleteSchedule, pb.DeleteScheduleRequest(name=name))
        return reply.deleted

    async def schedule_fires(self, name: str, *, limit: int = 20) -> list[ScheduleFire]:
        """The schedule's latest fires, newest first, each with the job it started."""
        client = cast("AsyncClient", self)
        reply = await client._call(client._jobs().ListScheduleFires,
                                   pb.ListScheduleFiresRequest(name=name, page_size=limit))
        return [ScheduleFire.from_proto(f) for f in reply.fires]
