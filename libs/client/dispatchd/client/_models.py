"""What the client returns: frozen dataclasses with Python types, built from the wire messages.

Invariant: times are timezone-aware UTC `datetime`s (None when unset), durations are
`timedelta`s, statuses are enums; `raw` keeps the message as received for tools that print
protobuf JSON (dispatchctl -o json), and takes no part in equality.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.client._errors import DispatchdError, of_code
from dispatchd.v1 import common_pb2, job_service_pb2

T = TypeVar("T")


class JobStatus(enum.IntEnum):
    """A job's lifecycle; values are the wire values of `dispatchd.v1.JobStatus`."""

    UNSPECIFIED = common_pb2.JOB_STATUS_UNSPECIFIED
    PENDING = common_pb2.JOB_STATUS_PENDING
    DISPATCHING = common_pb2.JOB_STATUS_DISPATCHING
    RUNNING = common_pb2.JOB_STATUS_RUNNING
    SUCCEEDED = common_pb2.JOB_STATUS_SUCCEEDED
    FAILED = common_pb2.JOB_STATUS_FAILED
    CANCELED = common_pb2.JOB_STATUS_CANCELED
    WAITING = common_pb2.JOB_STATUS_WAITING  # a workflow step whose dependencies are not done

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class ExecutionStatus(enum.IntEnum):
    """One attempt's lifecycle; values are the wire values of `dispatchd.v1.ExecutionStatus`."""

    UNSPECIFIED = common_pb2.EXECUTION_STATUS_UNSPECIFIED
    QUEUED = common_pb2.EXECUTION_STATUS_QUEUED
    CLAIMED = common_pb2.EXECUTION_STATUS_CLAIMED
    RUNNING = common_pb2.EXECUTION_STATUS_RUNNING
    SUCCEEDED = common_pb2.EXECUTION_STATUS_SUCCEEDED
    FAILED = common_pb2.EXECUTION_STATUS_FAILED
    DEAD_LETTERED = common_pb2.EXECUTION_STATUS_DEAD_LETTERED
    CANCELED = common_pb2.EXECUTION_STATUS_CANCELED


def _enum(kind: type[enum.IntEnum], value: int) -> Any:
    # A status added to the contract after this client was built reads as UNSPECIFIED.
    try:
        return kind(value)
    except ValueError:
        return kind(0)


def _time(message: Any, name: str) -> dt.datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=dt.UTC)


def _same_named(message: Any, scalars: str, times: str) -> dict[str, Any]:
    """Fields copied as they are (space-separated names), and timestamps as datetimes."""
    return {n: getattr(message, n) for n in scalars.split()} | {n: _time(message, n) for n in times.split()}


def _delta(value: duration_pb2.Duration) -> dt.timedelta:
    return value.ToTimedelta()


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff of a job; zero values mean the server's default (3, 5 s, 60 s)."""

    max_attempts: int = 0
    initial_backoff: dt.timedelta = dt.timedelta(0)
    max_backoff: dt.timedelta = dt.timedelta(0)


@dataclass(frozen=True)
class Job:
    job_id: str
    job_type: str
    status: JobStatus
    payload: bytes
    priority: int
    idempotency_key: str
    metadata: Mapping[str, str]
    retry_policy: RetryPolicy
    attempts: int
    result: bytes
    error_message: str
    execution_timeout: dt.timedelta | None
    run_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    finished_at: dt.datetime | None
    trace_id: str  # W3C trace id of the job's trace; "" when it was submitted untraced
    workflow_run_id: str  # the workflow run this job is a step of; "" for a job on its own
    raw: common_pb2.Job = field(repr=False, compare=False)

    def result_json(self) -> Any:
        """The result decoded as JSON (what a handler returning a dict produced)."""
        return json.loads(self.result)

    @classmethod
    def from_proto(cls, job: common_pb2.Job) -> Job:
        policy = job.retry_policy
        return cls(
            **_same_named(
                job,
                "job_id job_type payload priority idempotency_key attempts result error_message"
                " trace_id workflow_run_id",
                "run_at created_at updated_at finished_at",
            ),
            status=_enum(JobStatus, job.status),
            metadata=dict(job.metadata),
            retry_policy=RetryPolicy(policy.max_attempts, _delta(policy.initial_backoff), _delta(policy.max_backoff)),
            execution_timeout=_delta(job.execution_timeout) if job.HasField("execution_timeout") else None,
            raw=job,
        )


@dataclass(frozen=True)
class Execution:
    """One attempt of a job."""

    execution_id: str
    job_id: str
    attempt: int
    status: ExecutionStatus
    worker_id: str
    error_message: str
    result: bytes
    queued_at: dt.datetime | None
    available_at: dt.datetime | None
    claimed_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    deadline_at: dt.datetime | None
    raw: common_pb2.Execution = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, e: common_pb2.Execution) -> Execution:
        return cls(
            **_same_named(
                e,
                "execution_id job_id attempt worker_id error_message result",
                "queued_at available_at claimed_at started_at finished_at deadline_at",
            ),
            status=_enum(ExecutionStatus, e.status),
            raw=e,
        )


@dataclass(frozen=True)
class DeadLetter:
    """A job that failed after its last attempt, with that attempt."""

    job: Job
    execution: Execution
    raw: job_service_pb2.DeadLetter = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, d: job_service_pb2.DeadLetter) -> DeadLetter:
        return cls(Job.from_proto(d.job), Execution.from_proto(d.execution), d)


@dataclass(frozen=True)
class Submission:
    """A submitted job; `deduplicated` when an earlier job with the same idempotency key came back."""

    job: Job
    deduplicated: bool


@dataclass(frozen=True)
class BatchOutcome:
    """One job of a `submit_many`, in the order given: accepted (`error` is None) or refused.

    Accepted: `job_id` and `status` of the new job, or of the earlier one its idempotency key
    named (`deduplicated`). Refused: `error` says why (e.g. InvalidArgument, AlreadyExists).
    """

    job_id: str
    deduplicated: bool
    status: JobStatus
    error: DispatchdError | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_proto(cls, result: job_service_pb2.BatchSubmitJobResult) -> BatchOutcome:
        error = of_code(result.code, result.error_message) if result.code else None
        return cls(result.job_id, result.deduplicated, _enum(JobStatus, result.status), error)


@dataclass(frozen=True)
class Skipped:
    """A named job a redrive left as it was, and why."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Redrive:
    """The jobs that got a new attempt, the named ones that did not, and (with a filter)
    whether more matching dead letters remain."""

    redriven: tuple[Job, ...]
    skipped: tuple[Skipped, ...]
    more: bool
    raw: job_service_pb2.RedriveJobsResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, reply: job_service_pb2.RedriveJobsResponse) -> Redrive:
        return cls(
            redriven=tuple(Job.from_proto(j) for j in reply.redriven),
            skipped=tuple(Skipped(s.job_id, s.reason) for s in reply.skipped),
            more=reply.more,
            raw=reply,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_page_token` back for the next one ("" after the last)."""

    items: tuple[T, ...]
    next_page_token: str
