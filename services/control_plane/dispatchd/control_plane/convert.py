"""Store rows to API messages."""

from __future__ import annotations

import datetime as dt

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.platform.store.rows import ExecutionRow, JobRow
from dispatchd.v1 import common_pb2


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def duration(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


def job(row: JobRow) -> common_pb2.Job:
    # The effective policy is returned even when the caller left it unset, so clients see
    # exactly what the scheduler will apply.
    return common_pb2.Job(
        job_id=str(row.job_id),
        job_type=row.job_type,
        payload=row.payload,
        status=common_pb2.JobStatus.ValueType(int(row.status)),
        priority=row.priority,
        idempotency_key=row.idempotency_key or "",
        metadata=row.metadata,
        retry_policy=common_pb2.RetryPolicy(
            max_attempts=row.max_attempts,
            initial_backoff=duration(row.initial_backoff_ms),
            max_backoff=duration(row.max_backoff_ms),
        ),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        result=row.result or b"",
        error_message=row.error_message,
        attempts=row.attempts,
        finished_at=timestamp(row.finished_at),
        execution_timeout=duration(row.execution_timeout_ms) if row.execution_timeout_ms else None,
        run_at=timestamp(row.run_at),
    )


def execution(row: ExecutionRow) -> common_pb2.Execution:
    return common_pb2.Execution(
        execution_id=str(row.execution_id),
        job_id=str(row.job_id),
        attempt=row.attempt,
        status=common_pb2.ExecutionStatus.ValueType(int(row.status)),
        worker_id=row.worker_id or "",
        error_message=row.error_message,
        claimed_at=timestamp(row.claimed_at),
        started_at=timestamp(row.started_at),
        finished_at=timestamp(row.finished_at),
        queued_at=timestamp(row.queued_at),
        available_at=timestamp(row.available_at),
        result=row.result or b"",
        deadline_at=timestamp(row.deadline_at),
    )
