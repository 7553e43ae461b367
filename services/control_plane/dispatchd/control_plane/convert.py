"""Store rows (and submit outcomes) to API messages."""

from __future__ import annotations

import datetime as dt
import functools
import logging

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.platform import interceptors, metrics
from dispatchd.platform.errors import DispatchdError
from dispatchd.platform.store.rows import ExecutionRow, JobRow
from dispatchd.platform.store.submits import Submitted
from dispatchd.v1 import common_pb2, job_service_pb2

log = logging.getLogger("dispatchd.control_plane")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """What Timestamp.FromDatetime makes of an aware datetime, without its Python arithmetic."""
    if value is None:
        return None
    if value.tzinfo is None:  # naive: FromDatetime's own reading of it (UTC)
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(value)
        return ts
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


@functools.lru_cache(maxsize=256)
def _duration(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


def duration(ms: int) -> duration_pb2.Duration:
    """A fresh Duration (callers may change it); the few distinct values made once."""
    d = duration_pb2.Duration()
    d.CopyFrom(_duration(ms))
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
        trace_id=trace_id(row.trace_context),
        workflow_run_id=str(row.workflow_run_id) if row.workflow_run_id is not None else "",
    )


def trace_id(context: dict[str, str] | None) -> str:
    """The trace id of a stored W3C context (`traceparent` = version-traceid-spanid-flags)."""
    parts = (context or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


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


def batch_result(outcome: Submitted | Exception) -> job_service_pb2.BatchSubmitJobResult:
    """One job's answer in a batch: its job, or the status a single submit would have failed with."""
    if isinstance(outcome, Submitted):
        return job_service_pb2.BatchSubmitJobResult(
            job_id=str(outcome.job.job_id),
            deduplicated=outcome.deduplicated,
            status=common_pb2.JobStatus.ValueType(int(outcome.job.status)),
        )
    code = interceptors.status_of(outcome) if isinstance(outcome, DispatchdError) else None
    message = str(outcome)
    if code is None and isinstance(outcome, interceptors.STORE_UNAVAILABLE):
        metrics.count_store_error(outcome)
        code, message = grpc.StatusCode.UNAVAILABLE, "a backing store is unavailable; retry later"
    elif code is None:
        log.error("unhandled error submitting a job of a batch", exc_info=outcome)
        code, message = grpc.StatusCode.INTERNAL, "internal error"
    status_code: int = code.value[0]
    return job_service_pb2.BatchSubmitJobResult(code=status_code, error_message=message)
