"""Plain row types returned by the store.

Invariant: a row's fields are named after the table's columns, so a record is read by name;
only statuses are converted (to their enums).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, fields
from typing import Any

from dispatchd.platform.states import ExecutionStatus, JobStatus


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: uuid.UUID
    job_type: str
    payload: bytes
    status: JobStatus
    priority: int
    idempotency_key: str | None
    metadata: dict[str, str]
    max_attempts: int
    initial_backoff_ms: int
    max_backoff_ms: int
    retry_policy_set: bool
    attempts: int
    result: bytes | None
    error_message: str
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    execution_timeout_ms: int | None = None
    run_at: dt.datetime | None = None
    # Attempts used before the latest redrive: the retry budget counts from here.
    attempt_base: int = 0
    # The authenticated subject that submitted the job (None without authentication).
    submitted_by: str | None = None
    # The workflow run this job is a step of (None for a job submitted on its own).
    workflow_run_id: uuid.UUID | None = None
    # The job's W3C trace context (None: submitted untraced, or a statement that did not read it).
    trace_context: dict[str, str] | None = None

    @classmethod
    def from_record(cls, r: Any) -> JobRow:
        # submitted_by came with migration 0003, workflow_run_id with 0007: absent reads as None.
        return cls(
            **_columns(r, _JOB_COLUMNS),
            status=JobStatus(r["status"]),
            submitted_by=r.get("submitted_by"),
            workflow_run_id=r.get("workflow_run_id"),
            trace_context=r.get("trace_context"),
        )


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    execution_id: uuid.UUID
    job_id: uuid.UUID
    attempt: int
    status: ExecutionStatus
    job_type: str
    priority: int
    worker_id: str | None
    error_message: str
    result: bytes | None
    queued_at: dt.datetime
    available_at: dt.datetime
    claimed_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    deadline_at: dt.datetime | None = None

    @classmethod
    def from_record(cls, r: Any) -> ExecutionRow:
        return cls(**_columns(r, _EXECUTION_COLUMNS), status=ExecutionStatus(r["status"]))


def _fields(row_type: type, *, but: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type) if f.name not in but)


def _columns(r: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: r[name] for name in names}


# Columns read as they are: every field is named after its column; the others are converted.
_JOB_COLUMNS = _fields(JobRow, but=("status", "submitted_by", "workflow_run_id", "trace_context"))
_EXECUTION_COLUMNS = _fields(ExecutionRow, but=("status",))


@dataclass(frozen=True, slots=True)
class QueuedRef:
    """Enough to put an execution on its Redis ready queue."""

    execution_id: uuid.UUID
    job_type: str
    priority: int
    available_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """An execution claimed for a worker: what the gateway sends as an assignment."""

    execution_id: uuid.UUID
    job_id: uuid.UUID
    job_type: str
    payload: bytes
    attempt: int
    metadata: dict[str, str]
    claim_token: uuid.UUID
    lease_expires_at: dt.datetime
    execution_timeout_ms: int | None = None
    deadline_at: dt.datetime | None = None
    # The job's W3C trace context (None: submitted with tracing off).
    trace_context: dict[str, str] | None = None
    # From when the attempt became due to this claim (database clock), for the latency metric.
    waited_seconds: float | None = None
    # A workflow step: its success must release its dependants (store.workflow_progress).
    step: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    """Outcome of applying a result or a release to an execution.

    `applied` is False when the guard did not match (stale or duplicate); then nothing
    changed. `retry` is set when a new attempt was queued.
    """

    applied: bool
    job_id: uuid.UUID | None = None
    job_status: JobStatus | None = None
    retry: QueuedRef | None = None
    # Who held the settled execution (a failure may have to tell it to stop).
    execution_id: uuid.UUID | None = None
    worker_id: str | None = None
    # What the metrics label and observe: the job's type and how long ago it was submitted.
    job_type: str = ""
    job_age_seconds: float | None = None
    # Workflow steps this settlement made due (to push) and ended (to announce); see
    # store.workflow_progress. Empty for jobs that are not workflow steps.
    released: tuple[QueuedRef, ...] = ()
    ended: tuple[tuple[uuid.UUID, JobStatus], ...] = ()
