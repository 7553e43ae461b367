"""Plain row types returned by the store."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
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

    @classmethod
    def from_record(cls, r: Any) -> JobRow:
        return cls(
            job_id=r["job_id"],
            job_type=r["job_type"],
            payload=r["payload"],
            status=JobStatus(r["status"]),
            priority=r["priority"],
            idempotency_key=r["idempotency_key"],
            metadata=r["metadata"],
            max_attempts=r["max_attempts"],
            initial_backoff_ms=r["initial_backoff_ms"],
            max_backoff_ms=r["max_backoff_ms"],
            retry_policy_set=r["retry_policy_set"],
            attempts=r["attempts"],
            result=r["result"],
            error_message=r["error_message"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            finished_at=r["finished_at"],
            execution_timeout_ms=r["execution_timeout_ms"],
            run_at=r["run_at"],
            attempt_base=r["attempt_base"],
            submitted_by=r.get("submitted_by"),
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
        return cls(
            execution_id=r["execution_id"],
            job_id=r["job_id"],
            attempt=r["attempt"],
            status=ExecutionStatus(r["status"]),
            job_type=r["job_type"],
            priority=r["priority"],
            worker_id=r["worker_id"],
            error_message=r["error_message"],
            result=r["result"],
            queued_at=r["queued_at"],
            available_at=r["available_at"],
            claimed_at=r["claimed_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            deadline_at=r["deadline_at"],
        )


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
    # From when the attempt became due to this claim (database clock), for the latency metric.
    waited_seconds: float | None = None


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
