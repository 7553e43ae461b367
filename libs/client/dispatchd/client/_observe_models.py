"""What the observe calls return (logs, workers, queues, cluster status, job events).

Invariant, as in `_models`: frozen dataclasses of Python types (UTC datetimes, timedeltas,
enums, None for unset), with the wire message kept in `raw` (no part in equality) for tools
that print protobuf JSON.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dispatchd.client._models import JobStatus, _enum, _same_named
from dispatchd.v1 import observe_pb2, worker_service_pb2


class WorkerStatus(enum.IntEnum):
    """A worker's last reported state; values are the wire values of `dispatchd.v1.WorkerStatus`."""

    UNSPECIFIED = worker_service_pb2.WORKER_STATUS_UNSPECIFIED
    READY = worker_service_pb2.WORKER_STATUS_READY
    BUSY = worker_service_pb2.WORKER_STATUS_BUSY
    DRAINING = worker_service_pb2.WORKER_STATUS_DRAINING
    OFFLINE = worker_service_pb2.WORKER_STATUS_OFFLINE


class JobEventKind(enum.IntEnum):
    """What happened to a job; values are the wire values of `dispatchd.v1.JobEventKind`."""

    UNSPECIFIED = observe_pb2.JOB_EVENT_KIND_UNSPECIFIED
    SUBMITTED = observe_pb2.JOB_EVENT_KIND_SUBMITTED
    STARTED = observe_pb2.JOB_EVENT_KIND_STARTED
    RETRYING = observe_pb2.JOB_EVENT_KIND_RETRYING
    SUCCEEDED = observe_pb2.JOB_EVENT_KIND_SUCCEEDED
    DEAD_LETTERED = observe_pb2.JOB_EVENT_KIND_DEAD_LETTERED
    CANCELED = observe_pb2.JOB_EVENT_KIND_CANCELED
    REDRIVEN = observe_pb2.JOB_EVENT_KIND_REDRIVEN


@dataclass(frozen=True)
class LogLine:
    """One stored log chunk of an execution."""

    log_id: int
    execution_id: str
    attempt: int
    stream: str
    message: str
    emitted_at: dt.datetime | None
    raw: observe_pb2.LogLine = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, line: observe_pb2.LogLine) -> LogLine:
        return cls(**_same_named(line, "log_id execution_id attempt stream message", "emitted_at"), raw=line)


@dataclass(frozen=True)
class LogPage:
    """Lines of one ListLogs call. `next_page_token` is "" when no more are stored now;
    `resume_token` is where a later read (or `follow_logs`) continues."""

    lines: tuple[LogLine, ...]
    next_page_token: str
    resume_token: str


@dataclass(frozen=True)
class Worker:
    """A worker as the gateways last recorded it; `in_flight` of `max_concurrency` slots busy."""

    worker_id: str
    capabilities: tuple[str, ...]
    max_concurrency: int
    in_flight: int
    status: WorkerStatus
    gateway_id: str
    labels: Mapping[str, str]
    last_heartbeat_at: dt.datetime | None
    connected_at: dt.datetime | None
    raw: observe_pb2.WorkerInfo = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, w: observe_pb2.WorkerInfo) -> Worker:
        return cls(
            **_same_named(w, "worker_id max_concurrency in_flight gateway_id", "last_heartbeat_at connected_at"),
            capabilities=tuple(w.capabilities),
            status=_enum(WorkerStatus, w.status),
            labels=dict(w.labels),
            raw=w,
        )


@dataclass(frozen=True)
class QueueStats:
    """One job type: due work waiting (`depth`, and the oldest one's age), delayed and running."""

    job_type: str
    depth: int
    delayed: int
    running: int
    oldest_due_at: dt.datetime | None
    oldest_due_age: dt.timedelta | None
    raw: observe_pb2.QueueStats = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, q: observe_pb2.QueueStats) -> QueueStats:
        age = q.oldest_due_age.ToTimedelta() if q.HasField("oldest_due_age") else None
        return cls(**_same_named(q, "job_type depth delayed running", "oldest_due_at"), oldest_due_age=age, raw=q)


@dataclass(frozen=True)
class ClusterStatus:
    """Who leads the schedulers (lease holder, fencing epoch) and this region's primacy."""

    leader_held: bool
    leader_id: str
    leader_epoch: int
    lease_remaining: dt.timedelta | None
    region: str
    configured_primary: str
    recorded_primary: str
    region_epoch: int
    primary: bool
    passive: bool
    database_read_only: bool
    raw: observe_pb2.GetClusterStatusResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, reply: observe_pb2.GetClusterStatusResponse) -> ClusterStatus:
        s, r = reply.scheduler, reply.region
        remaining = s.lease_remaining.ToTimedelta() if s.HasField("lease_remaining") else None
        return cls(
            leader_held=s.held,
            leader_id=s.leader_id,
            leader_epoch=s.epoch,
            lease_remaining=remaining,
            region=r.name,
            configured_primary=r.configured_primary,
            recorded_primary=r.recorded_primary,
            region_epoch=r.epoch,
            primary=r.primary,
            passive=r.passive,
            database_read_only=r.database_read_only,
            raw=reply,
        )


@dataclass(frozen=True)
class JobEvent:
    """One message of `watch`: an event (None on the first, `subscribed`, message and on a
    bare gap notice), and whether events were lost before it (`gap`, `missed` of them dropped)."""

    job_id: str
    job_type: str
    kind: JobEventKind
    status: JobStatus
    attempt: int
    at: dt.datetime | None
    subscribed: bool
    gap: bool
    missed: int
    raw: observe_pb2.WatchJobsResponse = field(repr=False, compare=False)

    @property
    def is_event(self) -> bool:
        return self.raw.HasField("event")

    @classmethod
    def from_proto(cls, reply: observe_pb2.WatchJobsResponse) -> JobEvent:
        e = reply.event
        return cls(
            **_same_named(e, "job_id job_type attempt", "at"),
            kind=_enum(JobEventKind, e.kind),
            status=_enum(JobStatus, e.status),
            subscribed=reply.subscribed,
            gap=reply.gap,
            missed=reply.missed,
            raw=reply,
        )
