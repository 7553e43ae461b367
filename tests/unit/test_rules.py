"""Pure domain rules: state machine, routing, retry policy, page tokens (names: test_names)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path

import pytest

from dispatchd.common.routing import capability_matches, matching_job_types
from dispatchd.platform import paging
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import (
    EXECUTION_ACTIVE,
    EXECUTION_CANCELLABLE,
    EXECUTION_CLAIMABLE,
    EXECUTION_OWNED,
    EXECUTION_SETTLEABLE,
    EXECUTION_STARTABLE,
    EXECUTION_TERMINAL,
    EXECUTION_TRANSITIONS,
    JOB_ACTIVE,
    JOB_CANCELLABLE,
    JOB_CLAIMABLE,
    JOB_FAILABLE,
    JOB_RETRYABLE,
    JOB_STARTABLE,
    JOB_SUCCEEDABLE,
    JOB_TERMINAL,
    JOB_TRANSITIONS,
    ExecutionStatus,
    JobStatus,
    WorkerStatus,
    execution_sources,
    job_sources,
)
from dispatchd.v1 import common_pb2, worker_service_pb2


def test_state_values_equal_the_wire_enums() -> None:
    for status in JobStatus:
        assert common_pb2.JobStatus.Value(f"JOB_STATUS_{status.name}") == status
    for execution_status in ExecutionStatus:
        assert common_pb2.ExecutionStatus.Value(f"EXECUTION_STATUS_{execution_status.name}") == execution_status
    for worker_status in WorkerStatus:
        assert worker_service_pb2.WorkerStatus.Value(f"WORKER_STATUS_{worker_status.name}") == worker_status


def test_terminal_states_are_final() -> None:
    for status in JOB_TERMINAL:
        assert JOB_TRANSITIONS[status] == frozenset()
        assert int(status) not in job_sources(JobStatus.PENDING)
    for execution_status in EXECUTION_TERMINAL:
        assert EXECUTION_TRANSITIONS[execution_status] == frozenset()


def test_cancelled_job_is_never_resurrected() -> None:
    for target in JobStatus:
        assert int(JobStatus.CANCELED) not in job_sources(target)


def test_guards_derive_from_transitions() -> None:
    assert job_sources(JobStatus.SUCCEEDED) == [2, 3]
    assert execution_sources(ExecutionStatus.CLAIMED) == [1]
    assert execution_sources(ExecutionStatus.SUCCEEDED) == [2, 3]
    assert execution_sources(ExecutionStatus.CANCELED) == [1, 2, 3]


def test_named_guards_are_the_sets_the_readme_describes() -> None:
    # Read off the transition tables; pinned here so a table edit that changes a guard is seen.
    assert {ExecutionStatus.QUEUED} == EXECUTION_CLAIMABLE
    assert {JobStatus.PENDING} == JOB_CLAIMABLE
    assert {ExecutionStatus.CLAIMED} == EXECUTION_STARTABLE
    assert {JobStatus.PENDING, JobStatus.DISPATCHING} == JOB_STARTABLE
    assert EXECUTION_SETTLEABLE == EXECUTION_OWNED
    assert {JobStatus.DISPATCHING, JobStatus.RUNNING} == JOB_SUCCEEDABLE
    assert {JobStatus.DISPATCHING, JobStatus.RUNNING} == JOB_RETRYABLE
    assert JOB_FAILABLE == JOB_CANCELLABLE == JOB_ACTIVE
    assert EXECUTION_CANCELLABLE == EXECUTION_ACTIVE


@pytest.mark.parametrize(
    ("capability", "job_type", "expected"),
    [
        ("email", "email", True),
        ("email", "email.send", True),
        ("email", "email.digest.weekly", True),
        ("email.send", "email.send", True),
        ("email.send", "email.digest.weekly", False),
        ("email", "emails.send", False),
        ("email.send", "email", False),
    ],
)
def test_capability_namespace_routing(capability: str, job_type: str, expected: bool) -> None:
    assert capability_matches(capability, job_type) is expected


def test_matching_job_types() -> None:
    types = {"email.send", "email.digest.weekly", "sms.send", "emailer"}
    assert matching_job_types(["email"], types) == {"email.send", "email.digest.weekly"}
    assert matching_job_types(["email.send", "sms"], types) == {"email.send", "sms.send"}


def test_retry_defaults() -> None:
    assert RetryPolicy.from_parts(None, None, None) == RetryPolicy(3, 5000, 60000)
    assert RetryPolicy.from_parts(0, None, None) == RetryPolicy(3, 5000, 60000)


@pytest.mark.parametrize(
    ("attempts", "initial", "maximum"),
    [(-1, None, None), (101, None, None), (None, -5, None), (None, None, -1), (None, 2000, 1000)],
)
def test_retry_policy_rejects_bad_values(attempts: int | None, initial: int | None, maximum: int | None) -> None:
    with pytest.raises(InvalidArgument):
        RetryPolicy.from_parts(attempts, initial, maximum)


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(10, 100, 1000)
    rng = random.Random(7)
    for failed_attempt, cap in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)]:
        samples = [policy.backoff_ms(failed_attempt, rng) for _ in range(400)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.8  # jitter spans the range, not a fixed delay
        assert min(samples) < cap * 0.2


def test_backoff_keeps_sub_second_precision() -> None:
    policy = RetryPolicy(3, 250, 250)
    assert {policy.backoff_ms(1, random.Random(i)) for i in range(50)} - {0, 250}


KEY = b"k" * paging.MIN_KEY_BYTES
JOBS = paging.Listing("jobs", (None, "email.send", "alice"))


def test_page_tokens_round_trip_exactly() -> None:
    tokens = paging.PageTokens(KEY)
    created = dt.datetime(2026, 11, 23, 19, 0, 0, 123456, tzinfo=dt.UTC)
    job_id = uuid.uuid4()
    assert tokens.open_time_id(JOBS, tokens.issue_time_id(JOBS, created, job_id)) == (created, job_id)
    listing = paging.Listing("executions", (str(job_id),))
    assert tokens.open_attempt(listing, tokens.issue_attempt(listing, 17)) == 17
    assert tokens.open_time_id(JOBS, "") is None and tokens.open_attempt(listing, "") == 0
    # Another replica with the same key accepts the token.
    assert paging.PageTokens(KEY).open_attempt(listing, tokens.issue_attempt(listing, 3)) == 3


def _forged(position: object, key: bytes = KEY, listing: paging.Listing = JOBS) -> str:
    """A token for `position` as a client that knew the key would build it."""
    tokens = paging.PageTokens(key)
    return tokens._issue(listing, position)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!",
        "ZTE6MQ",  # today's unsigned "e1:1"
        "a.b.c",
        ".",
        _forged([1, str(uuid.uuid4())], key=b"x" * paging.MIN_KEY_BYTES),  # another deployment's key
        _forged([1, str(uuid.uuid4())], listing=paging.Listing("jobs", (None, "email.send", "bob"))),
        _forged([1, str(uuid.uuid4())])[:-2],  # tampered mac
        _forged([10**20, str(uuid.uuid4())]),  # a timestamp no datetime holds
        _forged([True, str(uuid.uuid4())]),
        _forged([1, "not-a-uuid"]),
        _forged({"a": 1}),
    ],
)
def test_foreign_or_tampered_job_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        paging.PageTokens(KEY).open_time_id(JOBS, token)


@pytest.mark.parametrize("attempt", [-1, paging.MAX_ATTEMPT + 1, 2**63, "1", None, 1.5])
def test_attempts_out_of_range_are_invalid_argument_even_when_signed(attempt: object) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        paging.PageTokens(KEY).open_attempt(JOBS, _forged([attempt]))


def test_page_token_keys_come_from_a_file(tmp_path: Path) -> None:
    short, good = tmp_path / "short", tmp_path / "good"
    short.write_bytes(b"x" * 10)
    good.write_bytes(KEY + b"\n")
    with pytest.raises(paging.PageKeyError, match="at least 32"):
        paging.PageTokens.from_key_file(str(short))
    with pytest.raises(paging.PageKeyError, match="cannot read"):
        paging.PageTokens.from_key_file(str(tmp_path / "missing"))
    issued = paging.PageTokens(KEY).issue_attempt(JOBS, 5)
    assert paging.PageTokens.from_key_file(str(good)).open_attempt(JOBS, issued) == 5
    with pytest.raises(InvalidArgument):
        paging.PageTokens.from_key_file("").open_attempt(JOBS, issued)  # a random key of its own
