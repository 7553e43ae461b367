"""Python values into request messages: payloads, durations, times, filters.

Invariant: every request the client sends is built here, so a keyword argument means the
same thing in every method (a naive `datetime` is UTC; `bytes` travel as they are).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any, Required, TypedDict, Unpack

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.client._models import JobStatus
from dispatchd.v1 import common_pb2, job_service_pb2

Payload = bytes | str | Mapping[str, Any] | list[Any] | None


def encode_payload(payload: Payload) -> bytes:
    """bytes as they are, text as UTF-8, dicts and lists as JSON, None as empty."""
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def duration(value: dt.timedelta) -> duration_pb2.Duration:
    if value < dt.timedelta(0):
        raise ValueError(f"a duration cannot be negative: {value}")
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC))
    return message


class JobOptions(TypedDict, total=False):
    """A job's settings besides its type and payload: the keyword arguments of `submit`."""

    priority: int
    idempotency_key: str | None
    metadata: Mapping[str, str] | None
    max_attempts: int | None
    initial_backoff: dt.timedelta | None
    max_backoff: dt.timedelta | None
    execution_timeout: dt.timedelta | None
    delay: dt.timedelta | None
    run_at: dt.datetime | None


class JobSpec(JobOptions, total=False):
    """One job of `submit_many`: the arguments of `submit`, by name (`job_type` required)."""

    job_type: Required[str]
    payload: Payload


def submit(job_type: str, payload: Payload = None, **options: Unpack[JobOptions]) -> job_service_pb2.SubmitJobRequest:
    """Without an `idempotency_key` one is generated here, once, so a retried call never makes a second job."""
    delay, run_at = options.get("delay"), options.get("run_at")
    initial_backoff, max_backoff = options.get("initial_backoff"), options.get("max_backoff")
    execution_timeout = options.get("execution_timeout")
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    request = job_service_pb2.SubmitJobRequest(
        job_type=job_type,
        payload=encode_payload(payload),
        priority=options.get("priority", 0),
        idempotency_key=options.get("idempotency_key") or uuid.uuid4().hex,
        metadata=dict(options.get("metadata") or {}),
        retry_policy=common_pb2.RetryPolicy(max_attempts=options.get("max_attempts") or 0),
    )
    if initial_backoff is not None:
        request.retry_policy.initial_backoff.CopyFrom(duration(initial_backoff))
    if max_backoff is not None:
        request.retry_policy.max_backoff.CopyFrom(duration(max_backoff))
    if execution_timeout is not None:
        request.execution_timeout.CopyFrom(duration(execution_timeout))
    if delay is not None:
        request.delay.CopyFrom(duration(delay))
    if run_at is not None:
        request.run_at.CopyFrom(timestamp(run_at))
    return request


def job_status(status: JobStatus | str | None) -> common_pb2.JobStatus.ValueType:
    """A status filter: the enum, or its name in any case ("running"; "cancelled" too)."""
    if status is None:
        return common_pb2.JOB_STATUS_UNSPECIFIED
    if isinstance(status, str):
        name = status.upper()
        status = JobStatus[name if name != "CANCELLED" else "CANCELED"]
    return common_pb2.JobStatus.ValueType(status)


def dead_letter_filter(
    job_type: str | None, since: dt.datetime | None, until: dt.datetime | None
) -> job_service_pb2.DeadLetterFilter:
    selection = job_service_pb2.DeadLetterFilter(job_type=job_type or "")
    if since is not None:
        selection.since.CopyFrom(timestamp(since))
    if until is not None:
        selection.until.CopyFrom(timestamp(until))
    return selection
