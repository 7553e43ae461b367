"""Request validation: every check runs before anything touches Postgres.

Each function either returns the value the store needs or raises InvalidArgument with a
message naming the field and the rule, so a caller can fix the request without guessing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.common import names
from dispatchd.platform import paging, queues
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store.dead_letters import DeadLetterFilter
from dispatchd.platform.store.submits import NewJob
from dispatchd.v1 import job_service_pb2

MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_VALUE_CHARS = 4096
MAX_IDEMPOTENCY_KEY_CHARS = 256
MAX_REASON_CHARS = 1024
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 300.0
# How far ahead a job may be scheduled (run_at / delay), and the longest execution timeout.
MAX_SCHEDULE_AHEAD = dt.timedelta(days=365)
MAX_EXECUTION_TIMEOUT_MS = 7 * 24 * 3600 * 1000
MAX_REDRIVE_IDS = 1000
# Issued tokens are about 100 characters; anything much longer was not issued by us.
MAX_PAGE_TOKEN_CHARS = 1024

# google.protobuf.Duration's documented range: about 10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000
_NANOS_PER_SECOND = 1_000_000_000
_NANOS_PER_MILLI = 1_000_000


def _no_nul(field: str, value: str) -> None:
    # Postgres text and jsonb cannot hold U+0000; without this check it would surface as an
    # internal error from the database instead of the caller's mistake.
    if "\x00" in value:
        raise InvalidArgument(f"{field} must not contain NUL characters")


def _name(rule: Callable[[str, str], str], value: str, field: str) -> str:
    # The rules live in dispatchd.common.names (shared with the gateway, the SDK and the CLI).
    try:
        return rule(value, field)
    except names.InvalidName as exc:
        raise InvalidArgument(str(exc)) from None


def job_type(value: str, field: str = "job_type") -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    return _name(names.job_type, value, field)


def job_id(value: str, field: str = "job_id") -> uuid.UUID:
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID, got {names.preview(value)}") from None


def duration_seconds(value: duration_pb2.Duration, field: str) -> float:
    """A valid, non-negative Duration in seconds (float, full precision)."""
    seconds, nanos = value.seconds, value.nanos
    if abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) >= _NANOS_PER_SECOND:
        raise InvalidArgument(f"{field} is not a valid duration (seconds={seconds}, nanos={nanos})")
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument(f"{field} is not a valid duration: seconds and nanos must have the same sign")
    if seconds < 0 or nanos < 0:
        raise InvalidArgument(f"{field} must not be negative")
    return seconds + nanos / _NANOS_PER_SECOND


def duration_ms(value: duration_pb2.Duration, field: str) -> int:
    """A valid, non-negative Duration in whole milliseconds (sub-millisecond rest dropped)."""
    duration_seconds(value, field)
    return value.seconds * 1000 + value.nanos // _NANOS_PER_MILLI


def retry_policy(request: job_service_pb2.SubmitJobRequest) -> tuple[RetryPolicy, bool]:
    """The effective policy and whether the caller set one at all."""
    if not request.HasField("retry_policy"):
        return RetryPolicy(), False
    policy = request.retry_policy
    initial = (
        duration_ms(policy.initial_backoff, "retry_policy.initial_backoff")
        if policy.HasField("initial_backoff")
        else None
    )
    maximum = duration_ms(policy.max_backoff, "retry_policy.max_backoff") if policy.HasField("max_backoff") else None
    # 0 means "unset" for a proto3 scalar; from_parts applies the default and rejects negatives.
    return RetryPolicy.from_parts(policy.max_attempts or None, initial, maximum), True


def metadata(values: dict[str, str], settings: Settings) -> dict[str, str]:
    if len(values) > settings.max_metadata_entries:
        raise InvalidArgument(
            f"metadata has {len(values)} entries; at most {settings.max_metadata_entries} are allowed"
        )
    for key, value in values.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise InvalidArgument(f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters long")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidArgument(
                f"metadata value of key {names.preview(key)} is {len(value)} characters; "
                f"at most {MAX_METADATA_VALUE_CHARS} are allowed"
            )
        _name(names.printable, key, "metadata key")
        _no_nul(f"metadata value of key {names.preview(key)}", value)
    return dict(values)


def timestamp(value: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    # Timestamp's documented range: 0001-01-01 to 9999-12-31.
    if not -62_135_596_800 <= value.seconds <= 253_402_300_799 or not 0 <= value.nanos < _NANOS_PER_SECOND:
        raise InvalidArgument(f"{field} is not a valid timestamp (seconds={value.seconds}, nanos={value.nanos})")
    return value.ToDatetime(tzinfo=dt.UTC)


def execution_timeout_ms(request: job_service_pb2.SubmitJobRequest) -> int | None:
    if not request.HasField("execution_timeout"):
        return None
    ms = duration_ms(request.execution_timeout, "execution_timeout")
    if ms <= 0:
        raise InvalidArgument("execution_timeout must be at least 1 ms (leave it unset for no limit)")
    if ms > MAX_EXECUTION_TIMEOUT_MS:
        raise InvalidArgument(f"execution_timeout must not exceed {MAX_EXECUTION_TIMEOUT_MS // 3_600_000} hours")
    return ms


def schedule(
    request: job_service_pb2.SubmitJobRequest, now: dt.datetime | None = None
) -> tuple[dt.datetime | None, int | None]:
    """(run_at, delay_ms) as sent, checked: not both, not more than a year ahead."""
    has_run_at, has_delay = request.HasField("run_at"), request.HasField("delay")
    if has_run_at and has_delay:
        raise InvalidArgument("set run_at or delay, not both")
    if has_run_at:
        now = now or dt.datetime.now(dt.UTC)
        run_at = timestamp(request.run_at, "run_at")
        if run_at - now > MAX_SCHEDULE_AHEAD:
            raise InvalidArgument(f"run_at must be at most {MAX_SCHEDULE_AHEAD.days} days ahead")
        return run_at, None  # a time in the past means now; the store clamps it
    if has_delay:
        delay = duration_ms(request.delay, "delay")
        if delay > MAX_SCHEDULE_AHEAD / dt.timedelta(milliseconds=1):
            raise InvalidArgument(f"delay must be at most {MAX_SCHEDULE_AHEAD.days} days")
        return None, delay
    return None, None


def new_job(
    request: job_service_pb2.SubmitJobRequest,
    settings: Settings,
    submitted_by: str | None = None,
    trace_context: dict[str, str] | None = None,
) -> NewJob:
    """The job to store; `submitted_by` and `trace_context` come from the call, not the request."""
    kind = job_type(request.job_type)
    if not 0 <= request.priority <= queues.MAX_PRIORITY:
        raise InvalidArgument(f"priority must be between 0 and {queues.MAX_PRIORITY}, got {request.priority}")
    if len(request.payload) > settings.max_payload_bytes:
        raise InvalidArgument(
            f"payload is {len(request.payload)} bytes; the limit is {settings.max_payload_bytes} bytes"
        )
    key = idempotency_key(request.idempotency_key)
    meta = metadata(dict(request.metadata), settings) if request.metadata else {}
    policy, policy_set = retry_policy(request)
    run_at, delay_ms = schedule(request)
    return NewJob(
        job_type=kind,
        payload=bytes(request.payload),
        priority=request.priority,
        idempotency_key=key,
        metadata=meta,
        retry=policy,
        retry_policy_set=policy_set,
        execution_timeout_ms=execution_timeout_ms(request),
        run_at=run_at,
        delay_ms=delay_ms,
        submitted_by=submitted_by,
        trace_context=trace_context,
    )


def page_size(requested: int, settings: Settings) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must not be negative, got {requested}")
    if requested == 0:
        return settings.default_page_size
    return min(requested, settings.max_page_size)


def page_token(value: str) -> str:
    # Only the size: what a token says is checked (signature, listing, range) by paging.PageTokens.
    if len(value) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument(paging.MALFORMED)
    return value


StatusT = TypeVar("StatusT", bound=IntEnum)


def enum_filter(kind: type[StatusT], value: int, what: str) -> StatusT | None:
    """A filter on a status: None for 0 (unset), INVALID_ARGUMENT for a value `kind` lacks."""
    if value == 0:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"status {value} is not a known {what} status") from None


def status_filter(value: int) -> JobStatus | None:
    return enum_filter(JobStatus, value, "job")


def job_type_filter(value: str) -> str | None:
    return job_type(value, "job_type filter") if value else None


def idempotency_key(key: str) -> str | None:
    """A valid idempotency key, or None when none was sent."""
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            f"idempotency_key is {len(key)} characters; at most {MAX_IDEMPOTENCY_KEY_CHARS} are allowed"
        )
    if key:
        _name(names.printable, key, "idempotency_key")
    return key or None


def created_range(request: job_service_pb2.ListJobsRequest) -> tuple[dt.datetime | None, dt.datetime | None]:
    """ListJobs' `created_after` (inclusive) and `created_before` (exclusive), when set."""
    after = timestamp(request.created_after, "created_after") if request.HasField("created_after") else None
    before = timestamp(request.created_before, "created_before") if request.HasField("created_before") else None
    if after is not None and before is not None and after >= before:
        raise InvalidArgument("created_after must be before created_before")
    return after, before


def idempotency_key_filter(value: str) -> str | None:
    if value:
        _name(names.printable, value, "idempotency_key filter")
    return value or None


def reason(value: str) -> str:
    if len(value) > MAX_REASON_CHARS:
        raise InvalidArgument(f"reason is {len(value)} characters; at most {MAX_REASON_CHARS} are allowed")
    _no_nul("reason", value)
    return value


def wait_timeout(request: job_service_pb2.WaitJobRequest) -> float:
    if not request.HasField("timeout"):
        return DEFAULT_WAIT_SECONDS
    return min(duration_seconds(request.timeout, "timeout"), MAX_WAIT_SECONDS)


def dead_letter_filter(value: job_service_pb2.DeadLetterFilter) -> DeadLetterFilter:
    since = timestamp(value.since, "filter.since") if value.HasField("since") else None
    until = timestamp(value.until, "filter.until") if value.HasField("until") else None
    if since is not None and until is not None and since >= until:
        raise InvalidArgument("filter.since must be before filter.until")
    job_kind = job_type(value.job_type, "filter.job_type") if value.job_type else None
    return DeadLetterFilter(job_type=job_kind, since=since, until=until)


def redrive_ids(values: list[str]) -> list[uuid.UUID]:
    if len(values) > MAX_REDRIVE_IDS:
        raise InvalidArgument(f"job_ids has {len(values)} entries; at most {MAX_REDRIVE_IDS} are allowed")
    ids = [job_id(v, f"job_ids[{i}]") for i, v in enumerate(values)]
    return list(dict.fromkeys(ids))


def redrive_limit(requested: int, settings: Settings) -> int:
    if requested < 0:
        raise InvalidArgument(f"limit must not be negative, got {requested}")
    return min(requested or settings.max_page_size, settings.max_page_size)
