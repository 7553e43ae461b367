"""Request validation of the control plane (no stores involved)."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import duration_pb2

from dispatchd.control_plane import validation
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import JobStatus
from dispatchd.v1 import common_pb2, job_service_pb2

SETTINGS = Settings(max_payload_bytes=100, max_metadata_entries=2, default_page_size=50, max_page_size=500)


def submit(**fields: object) -> job_service_pb2.SubmitJobRequest:
    return job_service_pb2.SubmitJobRequest(**{"job_type": "email.send", **fields})  # type: ignore[arg-type]


def test_a_minimal_request_gets_the_defaults() -> None:
    new = validation.new_job(submit(), SETTINGS)
    assert new.job_type == "email.send"
    assert new.payload == b"" and new.priority == 0
    assert new.idempotency_key is None and new.metadata == {}
    assert new.retry == RetryPolicy() and new.retry_policy_set is False


def test_a_full_request_is_carried_over() -> None:
    new = validation.new_job(
        submit(
            payload=b"p",
            priority=1000,
            idempotency_key="key",
            metadata={"a": "1"},
            retry_policy=common_pb2.RetryPolicy(
                max_attempts=7,
                initial_backoff=duration_pb2.Duration(nanos=250_000_000),
                max_backoff=duration_pb2.Duration(seconds=2, nanos=500_000_000),
            ),
        ),
        SETTINGS,
    )
    assert new.idempotency_key == "key" and new.metadata == {"a": "1"} and new.priority == 1000
    assert new.retry == RetryPolicy(7, 250, 2500)
    assert new.retry_policy_set is True


def test_an_empty_retry_policy_message_counts_as_set_with_defaults() -> None:
    new = validation.new_job(submit(retry_policy=common_pb2.RetryPolicy()), SETTINGS)
    assert new.retry == RetryPolicy() and new.retry_policy_set is True


def test_a_zero_backoff_is_kept() -> None:
    policy = common_pb2.RetryPolicy(initial_backoff=duration_pb2.Duration(), max_backoff=duration_pb2.Duration())
    assert validation.new_job(submit(retry_policy=policy), SETTINGS).retry == RetryPolicy(3, 0, 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_type": ""}, "job_type is required"),
        ({"job_type": "Email"}, "is not a valid job type"),
        ({"job_type": ".email"}, "is not a valid job type"),
        ({"job_type": "email..send"}, "is not a valid job type"),
        ({"job_type": "probe.never\n"}, "job_type 'probe.never\\n' is not a valid job type"),
        ({"priority": -5}, "priority must be between 0 and 1000, got -5"),
        ({"payload": b"x" * 101}, "payload is 101 bytes; the limit is 100 bytes"),
        ({"metadata": {"a": "1", "b": "2", "c": "3"}}, "metadata has 3 entries; at most 2"),
        ({"metadata": {"k\x00": "v"}}, "metadata key 'k\\x00' must not contain control characters"),
        ({"idempotency_key": "x" * 257}, "idempotency_key is 257 characters"),
        ({"idempotency_key": "k\r"}, "idempotency_key 'k\\r' must not contain control characters"),
        (
            {"retry_policy": common_pb2.RetryPolicy(max_backoff=duration_pb2.Duration(nanos=-1))},
            "retry_policy.max_backoff must not be negative",
        ),
        (
            {"retry_policy": common_pb2.RetryPolicy(max_backoff=duration_pb2.Duration(nanos=1_000_000_000))},
            "retry_policy.max_backoff is not a valid duration",
        ),
        (
            {"retry_policy": common_pb2.RetryPolicy(max_backoff=duration_pb2.Duration(seconds=90_000))},
            "must not exceed 24 hours",
        ),
        ({"retry_policy": common_pb2.RetryPolicy(max_attempts=101)}, "max_attempts must be between 1 and 100"),
    ],
)
def test_invalid_submits(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.new_job(submit(**fields), SETTINGS)
    assert message in str(caught.value)


def test_job_ids() -> None:
    value = uuid.uuid4()
    assert validation.job_id(str(value)) == value
    with pytest.raises(InvalidArgument, match="job_id must be a UUID"):
        validation.job_id("123")
    with pytest.raises(InvalidArgument, match="job_id is required"):
        validation.job_id("")


def test_page_sizes() -> None:
    assert validation.page_size(0, SETTINGS) == 50
    assert validation.page_size(7, SETTINGS) == 7
    assert validation.page_size(10_000, SETTINGS) == 500
    with pytest.raises(InvalidArgument, match="page_size must not be negative"):
        validation.page_size(-1, SETTINGS)


def test_status_filter() -> None:
    assert validation.status_filter(0) is None
    assert validation.status_filter(3) is JobStatus.RUNNING
    with pytest.raises(InvalidArgument, match="status 9 is not a known job status"):
        validation.status_filter(9)


def test_wait_timeouts() -> None:
    assert validation.wait_timeout(job_service_pb2.WaitJobRequest()) == 30.0
    assert validation.wait_timeout(job_service_pb2.WaitJobRequest(timeout=duration_pb2.Duration(seconds=3_600))) == 300
    assert validation.wait_timeout(job_service_pb2.WaitJobRequest(timeout=duration_pb2.Duration(nanos=5))) == 5e-9
    assert validation.wait_timeout(job_service_pb2.WaitJobRequest(timeout=duration_pb2.Duration())) == 0
    with pytest.raises(InvalidArgument, match="timeout must not be negative"):
        validation.wait_timeout(job_service_pb2.WaitJobRequest(timeout=duration_pb2.Duration(seconds=-1)))


def test_duration_ms_keeps_sub_second_precision() -> None:
    assert validation.duration_ms(duration_pb2.Duration(seconds=1, nanos=234_567_890), "d") == 1234
    with pytest.raises(InvalidArgument, match="same sign"):
        validation.duration_ms(duration_pb2.Duration(seconds=-1, nanos=5), "d")


def test_reason() -> None:
    assert validation.reason("") == ""
    with pytest.raises(InvalidArgument, match="reason must not contain NUL"):
        validation.reason("a\x00")
