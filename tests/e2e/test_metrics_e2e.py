"""Proof that the metrics move as they should: every service's and the worker's `/metrics`, after real jobs.

One job succeeds, one dead-letters after two attempts (builtin.fail, max_attempts=2), and one
waits on a queue no worker serves. Counters are compared before and after, summed across
processes as Prometheus would: each transition must be counted exactly once, by whichever
process committed it.
"""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import duration_pb2

from dispatchd.devtools.stack import CONTROL_PLANE, GATEWAY, SCHEDULER, Stack, kind_of
from dispatchd.v1 import common_pb2, job_service_pb2
from tests.support.polling import wait_until
from tests.support.scrape import Scrape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKER = "worker-1"
JOB_COUNTERS = (
    "dispatchd_jobs_submitted_total",
    "dispatchd_jobs_retried_total",
    "dispatchd_jobs_dead_lettered_total",
)


def _wait_terminal(stack: Stack, job_id: str) -> common_pb2.Job:
    reply = stack.jobs().WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=30)), timeout=35
    )
    assert reply.terminal, reply.job
    return reply.job


def _submit(stack: Stack, job_type: str, attempts: int = 1) -> str:
    policy = common_pb2.RetryPolicy(max_attempts=attempts, initial_backoff=duration_pb2.Duration(nanos=50_000_000))
    request = job_service_pb2.SubmitJobRequest(job_type=job_type, payload=b"m", retry_policy=policy)
    return str(stack.jobs().SubmitJob(request).job.job_id)


def test_metrics_count_each_transition_once_across_processes(stack: Stack) -> None:
    since = stack.db_now()
    stack.add_worker(WORKER, "--builtins")
    stack.wait_workers([WORKER], since)
    urls = stack.metrics_urls()
    assert {kind_of(name) for name in urls} == {CONTROL_PLANE, GATEWAY, SCHEDULER, "worker"}
    before = Scrape.of(urls)

    succeeded = _submit(stack, "builtin.echo")
    dead = _submit(stack, "builtin.fail", attempts=2)
    assert _wait_terminal(stack, succeeded).status == common_pb2.JOB_STATUS_SUCCEEDED
    assert _wait_terminal(stack, dead).status == common_pb2.JOB_STATUS_FAILED
    waiting = _submit(stack, "metrics.unserved")  # no worker runs it: it stays on its queue
    with pytest.raises(Exception, match="NOT_FOUND"):
        stack.jobs().GetJob(job_service_pb2.GetJobRequest(job_id=str(uuid.uuid4())))

    def delta(after: Scrape, name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    expected = {
        ("dispatchd_jobs_submitted_total", ()): 3,
        ("dispatchd_jobs_finished_total", (("outcome", "succeeded"),)): 1,
        ("dispatchd_jobs_finished_total", (("outcome", "failed"),)): 1,
        ("dispatchd_jobs_retried_total", ()): 1,
        ("dispatchd_jobs_dead_lettered_total", ()): 1,
        ("dispatchd_jobs_dead_lettered_total", (("job_type", "builtin.fail"),)): 1,
        ("dispatchd_job_submit_to_terminal_seconds_count", ()): 2,
        ("dispatchd_job_submit_to_claim_seconds_count", ()): 3,
        ("dispatchd_grpc_server_requests_total", (("method", "JobService/SubmitJob"), ("code", "OK"))): 3,
        ("dispatchd_grpc_server_requests_total", (("method", "JobService/GetJob"), ("code", "NOT_FOUND"))): 1,
        ("dispatchd_worker_executions_total", (("job_type", "builtin.echo"), ("outcome", "succeeded"))): 1,
        ("dispatchd_worker_executions_total", (("job_type", "builtin.fail"), ("outcome", "failed"))): 2,
        ("dispatchd_worker_execution_duration_seconds_count", ()): 3,
    }
    latest: dict[str, Scrape] = {}

    def counted() -> bool:
        latest["now"] = after = Scrape.of(urls)
        return all(delta(after, name, **dict(labels)) == want for (name, labels), want in expected.items())

    try:
        # A counter moves right after its commit, which a client may see a moment earlier.
        wait_until(counted, timeout=10, what="the expected counter deltas", interval=0.2)
    finally:
        got = {f"{name}{dict(labels)}": delta(latest["now"], name, **dict(labels)) for name, labels in expected}
        print("deltas:", got)

    def gauges() -> bool:
        latest["now"] = after = Scrape.of(urls)
        return (
            after.total("dispatchd_queue_depth", job_type="metrics.unserved") == 1
            and after.total("dispatchd_worker_streams") >= 1
        )

    # Both are sampled on a schedule (queue gauges every 5 s by the leader), not per scrape.
    wait_until(gauges, timeout=15, what="the queue depth and worker stream gauges", interval=0.5)
    after = latest["now"]
    schedulers = stack.schedulers
    assert after.total("dispatchd_scheduler_is_leader", schedulers) == 1
    assert after.total("dispatchd_scheduler_takeovers_total", schedulers) >= 1
    assert after.total("dispatchd_queue_oldest_due_age_seconds", job_type="metrics.unserved") > 0
    # Only the leader reports queues: a sum over replicas counts each queue once.
    assert sum(after.has("dispatchd_queue_depth", s, job_type="metrics.unserved") for s in schedulers) == 1
    assert after.total("dispatchd_worker_free_slots", [GATEWAY]) >= 1
    assert after.total("dispatchd_worker_inflight", [WORKER]) == 0
    # No id ever becomes a label.
    for samples in after.by_process.values():
        for _, labels in samples:
            assert all(value not in (succeeded, dead, waiting, WORKER) for _, value in labels)
    for name in urls:
        service = "worker" if name == WORKER else kind_of(name)
        assert after.total("dispatchd_build_info", [name], service=service) == 1
