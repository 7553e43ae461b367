"""Schedules on the wire: a `dispatchd.v1.Schedule` checked into a store Definition, and back.

Invariant: a Definition that leaves here is valid in full — its timing parses (croniter, the
IANA zone), its job template passes the same checks as SubmitJob — so the scheduler can fire
it without ever refusing it; every refusal is InvalidArgument naming the field.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from dispatchd.common import names
from dispatchd.control_plane import convert, validation
from dispatchd.platform.catch_up import CatchUp, Overlap
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument, NotFound
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store import workflows
from dispatchd.platform.store.schedules import SOURCE_API, Definition, FireRow, ScheduleRow, WorkflowTarget
from dispatchd.platform.store.submits import NewJob
from dispatchd.platform.timing import Timing
from dispatchd.v1 import common_pb2, job_service_pb2, schedule_pb2

DEFAULT_CATCH_UP_LIMIT = 100
MAX_CATCH_UP_LIMIT = 10_000
DEFAULT_NEXT_FIRES = 5
MAX_NEXT_FIRES = 100


def name(value: str, field: str = "name") -> str:
    """Schedule names follow the job type rule (lowercase, dots, dashes): safe in YAML and URLs."""
    try:
        return names.job_type(value, field)
    except names.InvalidName as exc:
        raise InvalidArgument(str(exc)) from None


def _enum(value: int, wire: type[CatchUp] | type[Overlap], default: CatchUp | Overlap, field: str) -> int:
    if value == 0:
        return int(default)
    try:
        return int(wire(value))
    except ValueError:
        raise InvalidArgument(f"{field}: unknown value {value}") from None


def definition(
    schedule: schedule_pb2.Schedule, settings: Settings, created_by: str | None, *, source: str = SOURCE_API
) -> Definition:
    """The Definition `schedule` asks for, or InvalidArgument naming the field at fault."""
    timing = schedule.WhichOneof("timing")
    cron = schedule.cron if timing == "cron" else None
    interval = None
    if timing == "interval":
        interval = dt.timedelta(milliseconds=validation.duration_ms(schedule.interval, "interval"))
    elif timing is None:
        raise InvalidArgument("timing: set cron or interval")
    target = schedule.WhichOneof("target")
    if target is None:
        raise InvalidArgument("target: set job (the job every fire submits) or workflow (the run it starts)")
    # Parse now (the anchor is irrelevant to validity): a bad expression or zone is the caller's error.
    zone = schedule.time_zone or "UTC"
    checked = Timing(cron=cron, time_zone=zone, interval=interval, anchor=dt.datetime.now(dt.UTC))
    workflow = _workflow(schedule.workflow, settings) if target == "workflow" else None
    if workflow is None:
        template = _job(schedule.job, settings, created_by)
    else:  # the workflow's steps define the jobs; the template only says who created the schedule
        template = NewJob("", b"", 0, None, {}, RetryPolicy(), False, submitted_by=created_by)
    limit = schedule.catch_up_limit or DEFAULT_CATCH_UP_LIMIT
    if not 1 <= limit <= MAX_CATCH_UP_LIMIT:
        raise InvalidArgument(f"catch_up_limit must be between 0 (default {DEFAULT_CATCH_UP_LIMIT}) and "
                              f"{MAX_CATCH_UP_LIMIT}, got {schedule.catch_up_limit}")
    return Definition(
        name=name(schedule.name), cron=checked.cron, interval=interval, time_zone=schedule.time_zone or "UTC",
        job=template, catch_up=CatchUp(_enum(schedule.catch_up, CatchUp, CatchUp.SKIP, "catch_up")),
        catch_up_limit=limit, overlap=Overlap(_enum(schedule.overlap, Overlap, Overlap.ALLOW, "overlap")),
        paused=schedule.paused, source=source, workflow=workflow,
    )


def _job(job: schedule_pb2.ScheduleJobTarget, settings: Settings, created_by: str | None) -> NewJob:
    """The job template, checked exactly as SubmitJob checks a job."""
    request = job_service_pb2.SubmitJobRequest(
        job_type=job.job_type, payload=job.payload, priority=job.priority, metadata=dict(job.metadata),
    )
    if job.HasField("retry_policy"):
        request.retry_policy.CopyFrom(job.retry_policy)
    if job.HasField("execution_timeout"):
        request.execution_timeout.CopyFrom(job.execution_timeout)
    try:
        return validation.new_job(request, settings, created_by)
    except InvalidArgument as exc:
        raise InvalidArgument(f"job: {exc}") from None


async def check_workflow(conn: asyncpg.Connection, d: Definition) -> None:
    """A workflow target must name a registered workflow (and version): refused now, not at each fire."""
    if d.workflow is None:
        return
    try:
        await workflows.get_definition(conn, d.workflow.name, d.workflow.version)
    except NotFound as exc:
        raise InvalidArgument(f"workflow.workflow_name: {exc}") from None


def _workflow(target: schedule_pb2.ScheduleWorkflowTarget, settings: Settings) -> WorkflowTarget:
    if target.workflow_version < 0:
        raise InvalidArgument("workflow.workflow_version must not be negative (0: the latest)")
    if len(target.input) > settings.max_payload_bytes:
        raise InvalidArgument(f"workflow.input is {len(target.input)} bytes; the limit is {settings.max_payload_bytes}")
    return WorkflowTarget(
        name(target.workflow_name, "workflow.workflow_name"), target.workflow_version or None, bytes(target.input)
    )


def _retry(policy: RetryPolicy) -> common_pb2.RetryPolicy:
    return common_pb2.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff=convert.duration(policy.initial_backoff_ms),
        max_backoff=convert.duration(policy.max_backoff_ms),
    )


def to_wire(row: ScheduleRow, next_fires: int = 1) -> schedule_pb2.Schedule:
    """The schedule as the API shows it; `next_fires` next fire times (none while paused)."""
    d = row.definition
    out = schedule_pb2.Schedule(
        name=row.name, time_zone=d.time_zone, catch_up=int(d.catch_up),  # type: ignore[arg-type]
        catch_up_limit=d.catch_up_limit, overlap=int(d.overlap), paused=d.paused,  # type: ignore[arg-type]
        source=d.source, created_at=convert.timestamp(row.created_at), updated_at=convert.timestamp(row.updated_at),
    )
    _target(d, out)
    if d.cron is not None:
        out.cron = d.cron
    elif d.interval_ms is not None:
        out.interval.CopyFrom(convert.duration(d.interval_ms))
    if not d.paused and next_fires > 0:
        times = row.timing.fire_times(row.cursor_at)
        stamps = [convert.timestamp(next(times)) for _ in range(next_fires)]
        out.next_fire_times.extend(ts for ts in stamps if ts is not None)
    if row.last_fire_at is not None:
        out.last_fire.CopyFrom(fire(FireRow(row.last_fire_at, row.last_fired_at, row.last_fire_job_id,
                                            row.last_fire_run_id, None, row.last_fire_error)))
    return out


def _target(d: Definition, out: schedule_pb2.Schedule) -> None:
    if d.workflow is not None:
        w = d.workflow
        out.workflow.CopyFrom(schedule_pb2.ScheduleWorkflowTarget(
            workflow_name=w.name, workflow_version=w.version or 0, input=w.input))
        return
    template = d.job
    out.job.CopyFrom(schedule_pb2.ScheduleJobTarget(
        job_type=template.job_type, payload=template.payload, priority=template.priority,
        metadata=template.metadata, retry_policy=_retry(template.retry) if template.retry_policy_set else None,
        execution_timeout=None if template.execution_timeout_ms is None else convert.duration(
            template.execution_timeout_ms),
    ))


def _id(value: object | None) -> str:
    return "" if value is None else str(value)


def fire(row: FireRow) -> schedule_pb2.ScheduleFire:
    return schedule_pb2.ScheduleFire(
        fire_time=convert.timestamp(row.fire_time), fired_at=convert.timestamp(row.fired_at),
        job_id=_id(row.job_id), run_id=_id(row.run_id), error=row.error,
    )


def next_fire_count(requested: int) -> int:
    if requested < 0 or requested > MAX_NEXT_FIRES:
        raise InvalidArgument(f"next_fire_count must be between 0 (default {DEFAULT_NEXT_FIRES}) and {MAX_NEXT_FIRES}")
    return requested or DEFAULT_NEXT_FIRES
