"""The platform as it runs in production: separate processes, driven through gRPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from dispatchd.devtools.stack import Stack
from dispatchd.v1 import common_pb2, job_service_pb2
from tests.support.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SUCCEEDED = common_pb2.JOB_STATUS_SUCCEEDED


def _wait(stack: Stack, job_id: str, seconds: float = 30) -> common_pb2.Job:
    reply = stack.jobs().WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=int(seconds))),
        timeout=seconds + 5,
    )
    assert reply.terminal, f"job {job_id} not terminal after {seconds}s: {reply.job}"
    return reply.job


def _policy(attempts: int, initial_ms: int, max_ms: int) -> common_pb2.RetryPolicy:
    return common_pb2.RetryPolicy(
        max_attempts=attempts,
        initial_backoff=duration_pb2.Duration(nanos=initial_ms * 1_000_000),
        max_backoff=duration_pb2.Duration(nanos=max_ms * 1_000_000),
    )


def test_submitted_job_is_pushed_to_a_worker_and_succeeds(stack: Stack) -> None:
    stack.add_worker("worker-1", "--builtins")
    jobs = stack.jobs()
    submitted = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=b"hello", metadata={"team": "a"})
    ).job
    assert submitted.status == common_pb2.JOB_STATUS_PENDING

    job = _wait(stack, submitted.job_id)
    assert job.status == SUCCEEDED
    assert job.result == b"hello"
    assert job.attempts == 1

    got = jobs.GetJob(job_service_pb2.GetJobRequest(job_id=submitted.job_id)).job
    assert got.status == SUCCEEDED and got.result == b"hello" and got.metadata["team"] == "a"
    executions = jobs.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=submitted.job_id)).executions
    assert [e.status for e in executions] == [common_pb2.EXECUTION_STATUS_SUCCEEDED]
    assert executions[0].worker_id == "worker-1"
    assert executions[0].claimed_at.ToNanoseconds() <= executions[0].finished_at.ToNanoseconds()


def test_capability_namespace_routes_jobs(stack: Stack) -> None:
    stack.add_worker("worker-ns", "--builtins")  # registers the `builtin` namespace handlers
    jobs = stack.jobs()
    ids = [
        jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=str(i).encode())).job.job_id
        for i in range(20)
    ]
    results = [_wait(stack, job_id) for job_id in ids]
    assert [r.result for r in results] == [str(i).encode() for i in range(20)]


def test_idempotent_resubmit_returns_the_same_job(stack: Stack) -> None:
    jobs = stack.jobs()
    request = job_service_pb2.SubmitJobRequest(job_type="reports.daily", payload=b"x", idempotency_key="k-1")
    first = jobs.SubmitJob(request)
    again = jobs.SubmitJob(request)
    assert again.job.job_id == first.job.job_id and again.deduplicated and not first.deduplicated
    with pytest.raises(grpc.RpcError) as err:
        jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="reports.daily", payload=b"y", idempotency_key="k-1"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_fields", "code", "fragment"),
    [
        ({"job_type": ""}, grpc.StatusCode.INVALID_ARGUMENT, "job_type"),
        ({"job_type": "Bad Type!"}, grpc.StatusCode.INVALID_ARGUMENT, "job_type"),
        ({"job_type": "ok", "priority": -1}, grpc.StatusCode.INVALID_ARGUMENT, "priority"),
        ({"job_type": "ok", "payload": b"x" * (1024 * 1024 + 1)}, grpc.StatusCode.INVALID_ARGUMENT, "payload"),
    ],
)
def test_bad_submissions_are_rejected_and_write_nothing(
    stack: Stack, request_fields: dict[str, object], code: grpc.StatusCode, fragment: str
) -> None:
    jobs = stack.jobs()
    with pytest.raises(grpc.RpcError) as err:
        jobs.SubmitJob(job_service_pb2.SubmitJobRequest(**request_fields))  # type: ignore[arg-type]
    assert err.value.code() == code
    assert fragment in (err.value.details() or "")
    assert list(jobs.ListJobs(job_service_pb2.ListJobsRequest()).jobs) == []


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda j: j.GetJob(job_service_pb2.GetJobRequest(job_id="00000000-0000-0000-0000-000000000001")), "NOT_FOUND"),
        (lambda j: j.GetJob(job_service_pb2.GetJobRequest(job_id="not-a-uuid")), "INVALID_ARGUMENT"),
        (lambda j: j.ListJobs(job_service_pb2.ListJobsRequest(page_token="%%%")), "INVALID_ARGUMENT"),
        (
            lambda j: j.ListExecutions(
                job_service_pb2.ListExecutionsRequest(job_id="00000000-0000-0000-0000-000000000001")
            ),
            "NOT_FOUND",
        ),
    ],
)
def test_bad_lookups_get_clear_statuses(stack: Stack, call: object, code: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(stack.jobs())  # type: ignore[operator]
    assert err.value.code().name == code
    assert err.value.details()


def test_failing_job_is_retried_after_backoff_then_dead_lettered(stack: Stack) -> None:
    stack.add_worker("worker-fail", "--builtins")
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(job_type="builtin.fail", retry_policy=_policy(3, 200, 400))
    ).job.job_id
    job = _wait(stack, job_id)
    assert job.status == common_pb2.JOB_STATUS_FAILED
    assert job.attempts == 3
    executions = jobs.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job_id)).executions
    assert [e.status for e in executions] == [
        common_pb2.EXECUTION_STATUS_FAILED,
        common_pb2.EXECUTION_STATUS_FAILED,
        common_pb2.EXECUTION_STATUS_DEAD_LETTERED,
    ]
    assert [e.attempt for e in executions] == [1, 2, 3]


def test_flaky_job_succeeds_on_a_later_attempt(stack: Stack) -> None:
    stack.add_worker("worker-flaky", "--builtins")
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job_type="builtin.flaky", payload=b'{"fail_attempts": 1}', retry_policy=_policy(3, 100, 100)
        )
    ).job.job_id
    job = _wait(stack, job_id)
    assert job.status == SUCCEEDED and job.attempts == 2


def test_cancel_a_queued_job(stack: Stack) -> None:
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="nobody.runs.this")).job.job_id
    cancelled = jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id)).job
    assert cancelled.status == common_pb2.JOB_STATUS_CANCELED
    assert _wait(stack, job_id).status == common_pb2.JOB_STATUS_CANCELED
    executions = jobs.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job_id)).executions
    assert [e.status for e in executions] == [common_pb2.EXECUTION_STATUS_CANCELED]


def test_work_of_a_killed_worker_is_requeued_at_once(stack: Stack) -> None:
    doomed = stack.add_worker("worker-doomed", "--builtins")
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(job_type="builtin.sleep", payload=json.dumps({"seconds": 1.0}).encode())
    ).job.job_id
    wait_until(
        lambda: jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id)).job.status == common_pb2.JOB_STATUS_RUNNING,
        15,
        "job started",
    )
    doomed.kill()
    killed_at = time.monotonic()
    stack.add_worker("worker-heir", "--builtins")
    job = _wait(stack, job_id)
    assert job.status == SUCCEEDED
    # Requeued on stream close, not after the 30 s lease: done within a few seconds.
    assert time.monotonic() - killed_at < 10
    executions = jobs.ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job_id)).executions
    assert [(e.worker_id, e.status) for e in executions] == [
        ("worker-doomed", common_pb2.EXECUTION_STATUS_FAILED),
        ("worker-heir", common_pb2.EXECUTION_STATUS_SUCCEEDED),
    ]


def _dispatchctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHD_CONTROL_PLANE_TARGET": stack.control_plane_target}
    return subprocess.run(
        [sys.executable, "-m", "dispatchd.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shell_command_submitted_with_the_cli_runs_on_a_worker(stack: Stack) -> None:
    stack.add_worker("worker-shell", "--enable-shell")
    ok = _dispatchctl(stack, "run", "--", "echo", "hello from dispatchd")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "hello from dispatchd"
    failed = _dispatchctl(stack, "run", "--max-attempts", "1", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert failed.returncode == 3
    assert "oops" in failed.stderr


def test_shell_is_off_unless_enabled(stack: Stack) -> None:
    stack.add_worker("worker-plain", "--builtins")
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(job_type="shell", payload=b'{"command": "echo hi"}')
    ).job.job_id
    reply = jobs.WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=1)), timeout=10
    )
    assert not reply.terminal and reply.job.status == common_pb2.JOB_STATUS_PENDING
