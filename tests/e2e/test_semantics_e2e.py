"""Execution semantics through the whole platform, every service its own process.

Retries after backoff really run (the scheduler process queues them on time), delayed jobs
start on time, execution timeouts fail attempts, cancelled jobs stay cancelled, and dead
letters are listed and redriven with dispatchctl.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.devtools.stack import Stack
from dispatchd.v1 import common_pb2, job_service_pb2
from tests.support.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAILED = common_pb2.JOB_STATUS_FAILED
SUCCEEDED = common_pb2.JOB_STATUS_SUCCEEDED


def _wait(stack: Stack, job_id: str, seconds: int = 30) -> common_pb2.Job:
    reply = stack.jobs().WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=seconds)),
        timeout=seconds + 5,
    )
    assert reply.terminal, f"job {job_id} not terminal after {seconds}s: {reply.job}"
    return reply.job


def _ms(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def _executions(stack: Stack, job_id: str) -> list[common_pb2.Execution]:
    return list(stack.jobs().ListExecutions(job_service_pb2.ListExecutionsRequest(job_id=job_id)).executions)


def _at(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


def _ctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["DISPATCHD_CONTROL_PLANE_TARGET"] = stack.control_plane_target
    argv = [sys.executable, "-m", "dispatchd.cli.main", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def _wait_running(stack: Stack, job_id: str) -> None:
    jobs = stack.jobs()
    wait_until(
        lambda: jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id)).job.status == common_pb2.JOB_STATUS_RUNNING,
        15,
        "job started",
    )


def test_retries_after_backoff_actually_run_on_time(stack: Stack) -> None:
    stack.add_worker("worker-flaky", "--builtins")
    policy = common_pb2.RetryPolicy(max_attempts=4, initial_backoff=_ms(400), max_backoff=_ms(400))
    job_id = stack.jobs().SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job_type="builtin.flaky", payload=b'{"fail_attempts": 3}', retry_policy=policy
        )
    ).job.job_id
    job = _wait(stack, job_id)
    assert (job.status, job.attempts) == (SUCCEEDED, 4)
    history = _executions(stack, job_id)
    assert [e.status for e in history] == [common_pb2.EXECUTION_STATUS_FAILED] * 3 + [
        common_pb2.EXECUTION_STATUS_SUCCEEDED
    ]
    lags = []
    for before, after in itertools.pairwise(history):
        backoff = _at(after.available_at) - _at(before.finished_at)
        assert dt.timedelta(0) <= backoff <= dt.timedelta(milliseconds=450), backoff  # full jitter under the cap
        lags.append((_at(after.claimed_at) - _at(after.available_at)).total_seconds())
    print(f"\nretry claimed after becoming due: {', '.join(f'{lag * 1000:.0f} ms' for lag in lags)}")
    # Queued by the scheduler's timer when due, not by its 1 s safety-net tick.
    assert max(lags) < 0.15


@pytest.mark.parametrize("how", ["delay", "run_at"])
def test_delayed_jobs_start_on_time(stack: Stack, how: str) -> None:
    stack.add_worker("worker-delay", "--builtins")
    jobs = stack.jobs()
    # Let the worker register, so the measurement is the platform's, not the worker's start-up.
    warm = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.echo")).job.job_id
    assert _wait(stack, warm).status == SUCCEEDED
    request = job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=b"later")
    if how == "delay":
        request.delay.CopyFrom(_ms(1500))
    else:
        request.run_at.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1500))
    submitted = jobs.SubmitJob(request).job
    assert submitted.status == common_pb2.JOB_STATUS_PENDING and submitted.HasField("run_at")
    job = _wait(stack, submitted.job_id)
    assert job.status == SUCCEEDED and job.result == b"later"
    (only,) = _executions(stack, submitted.job_id)
    lag = (_at(only.claimed_at) - _at(job.run_at)).total_seconds()
    print(f"\n{how}: claimed {lag * 1000:.0f} ms after run_at")
    assert _at(only.available_at) == _at(job.run_at)
    assert 0 <= lag < 0.1


def test_bad_schedules_and_timeouts_are_rejected(stack: Stack) -> None:
    jobs = stack.jobs()
    now = dt.datetime.now(dt.UTC)
    both = job_service_pb2.SubmitJobRequest(job_type="x", delay=_ms(10))
    both.run_at.FromDatetime(now)
    too_far = job_service_pb2.SubmitJobRequest(job_type="x")
    too_far.run_at.FromDatetime(now + dt.timedelta(days=366))
    for request, words in [
        (both, "not both"),
        (too_far, "365 days"),
        (job_service_pb2.SubmitJobRequest(job_type="x", delay=_ms(366 * 24 * 3600 * 1000)), "365 days"),
        (job_service_pb2.SubmitJobRequest(job_type="x", delay=duration_pb2.Duration(seconds=-1)), "negative"),
        (job_service_pb2.SubmitJobRequest(job_type="x", execution_timeout=duration_pb2.Duration()), "at least 1 ms"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            jobs.SubmitJob(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (err.value.details() or "")
    # A time in the past means now.
    past = job_service_pb2.SubmitJobRequest(job_type="builtin.echo")
    past.run_at.FromDatetime(now - dt.timedelta(days=3))
    assert jobs.SubmitJob(past).job.status == common_pb2.JOB_STATUS_PENDING


def test_execution_timeout_fails_the_attempt(stack: Stack) -> None:
    stack.add_worker("worker-slow", "--builtins")
    policy = common_pb2.RetryPolicy(max_attempts=2, initial_backoff=_ms(10), max_backoff=_ms(10))
    submitted = stack.jobs().SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job_type="builtin.sleep",
            payload=json.dumps({"seconds": 30}).encode(),
            execution_timeout=_ms(500),
            retry_policy=policy,
        )
    ).job
    assert submitted.execution_timeout.ToMilliseconds() == 500
    job = _wait(stack, submitted.job_id)
    assert job.status == FAILED and job.error_message.startswith("execution timed out")
    history = _executions(stack, submitted.job_id)
    assert [e.status for e in history] == [
        common_pb2.EXECUTION_STATUS_FAILED,
        common_pb2.EXECUTION_STATUS_DEAD_LETTERED,
    ]
    for e in history:
        ran = (_at(e.finished_at) - _at(e.started_at)).total_seconds()
        assert 0.45 < ran < 1.0, ran
        assert e.error_message.startswith("execution timed out") and e.HasField("deadline_at")


def test_a_cancelled_running_job_stays_cancelled(stack: Stack) -> None:
    worker = stack.add_worker("worker-cancel", "--builtins")
    jobs = stack.jobs()
    job_id = jobs.SubmitJob(
        job_service_pb2.SubmitJobRequest(job_type="builtin.sleep", payload=json.dumps({"seconds": 30}).encode())
    ).job.job_id
    _wait_running(stack, job_id)
    assert jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id, reason="stop")).job.status == (
        common_pb2.JOB_STATUS_CANCELED
    )
    wait_until(lambda: "cancelled by the gateway" in worker.log_tail(200), 10, "the worker logged the cancel")
    time.sleep(0.3)  # the worker's "cancelled" result has landed (and was stale)
    job = jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id)).job
    assert (job.status, job.attempts, job.error_message) == (common_pb2.JOB_STATUS_CANCELED, 1, "stop")
    assert [e.status for e in _executions(stack, job_id)] == [common_pb2.EXECUTION_STATUS_CANCELED]


def test_dead_letters_listed_and_redriven_with_dispatchctl(stack: Stack) -> None:
    stack.add_worker("worker-dl", "--builtins")
    jobs = stack.jobs()
    one = common_pb2.RetryPolicy(max_attempts=1)
    failed = [
        jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.fail", retry_policy=one)).job.job_id
        for _ in range(2)
    ]
    ok = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.echo")).job.job_id
    for job_id in failed:
        assert _wait(stack, job_id).status == FAILED
    assert _wait(stack, ok).status == SUCCEEDED

    listed = _ctl(stack, "-o", "json", "dead-letters", "--type", "builtin.fail", "--since", "10m")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["dead_letters"]
    assert sorted(d["job"]["job_id"] for d in letters) == sorted(failed)
    assert all(d["execution"]["status"] == "EXECUTION_STATUS_DEAD_LETTERED" for d in letters)
    assert all(d["execution"]["worker_id"] == "worker-dl" for d in letters)
    table = _ctl(stack, "dead-letters")
    assert table.returncode == 0 and failed[0] in table.stdout and "DEAD-LETTERED" in table.stdout
    assert json.loads(_ctl(stack, "-o", "json", "dead-letters", "--until", "1h").stdout)["dead_letters"] == []

    redriven = _ctl(stack, "redrive", failed[0], ok)
    assert redriven.returncode == 1  # one of the two was not a dead letter
    assert failed[0] in redriven.stdout and f"not redriven: {ok}: job is succeeded" in redriven.stderr
    job = _wait(stack, failed[0])
    assert (job.status, job.attempts) == (FAILED, 2)
    history = _executions(stack, failed[0])
    assert [(e.attempt, e.status) for e in history] == [
        (1, common_pb2.EXECUTION_STATUS_DEAD_LETTERED),
        (2, common_pb2.EXECUTION_STATUS_DEAD_LETTERED),
    ]
    by_filter = _ctl(stack, "-o", "json", "redrive", "--type", "builtin.fail", "--limit", "5")
    assert by_filter.returncode == 0, by_filter.stderr
    assert sorted(j["job_id"] for j in json.loads(by_filter.stdout)["redriven"]) == sorted(failed)
    assert _ctl(stack, "redrive").returncode == 2  # names nothing: a usage error
    with pytest.raises(grpc.RpcError) as err:
        jobs.RedriveJobs(job_service_pb2.RedriveJobsRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
