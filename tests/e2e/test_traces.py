"""One job, one trace: client, control plane, gateway and worker spans joined across processes.

A real OTLP receiver (tests.support.otlp) listens in this process; the control plane, the
gateway, a scheduler and a worker run as their own processes (dispatchd.devtools.stack) and
export to it. The test process traces too, so its span is the one root, and its SubmitJob
call carries the context in gRPC metadata, as an application's would.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from dispatchd.client import Client, JobStatus
from dispatchd.devtools.stack import Stack, Stores, Topology, Workers
from tests.support.otlp import ReceivedSpan, Receiver, receiving
from tests.support.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from receiving()


@pytest.fixture
def traced_stack(database_url: str, redis_url: str, tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    topology = Topology(
        schedulers=1,
        workers=(Workers(),),
        stores=Stores(database_url=database_url, redis_url=redis_url, migrate=False),
        settings={
            "DISPATCHD_LOG_LEVEL": "INFO",
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
        },
    )
    with Stack(topology, tmp_path) as started:
        yield started


def _by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: str(s.attributes.get("dispatchd.attempt")))


def _log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_retried_job_is_one_connected_trace_across_processes(traced_stack: Stack, receiver: Receiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "test-client"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    with Client(traced_stack.control_plane_target) as client:
        with provider.get_tracer("test").start_as_current_span("client") as root:
            submitted = client.submit(
                "builtin.flaky",
                {"fail_attempts": 1},
                max_attempts=3,
                initial_backoff=dt.timedelta(milliseconds=100),
            )
        job = client.wait(submitted.job.job_id, timeout=dt.timedelta(seconds=20))
    provider.shutdown()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    trace_id = trace.format_trace_id(root.get_span_context().trace_id)
    assert job.trace_id == trace_id  # what the dashboard's job page shows

    def complete() -> bool:
        names = [s.name for s in receiver.spans(trace_id)]
        return all(names.count(name) == 2 for name in ("assign", "attempt", "result")) and "SubmitJob" in names

    wait_until(complete, timeout=15, what=f"every span of the job's trace: {receiver.spans(trace_id)}")
    spans = receiver.spans(trace_id)
    # Outside it only the wait, called outside the client's span: a trace of its own.
    assert {s.name for s in receiver.spans() if s.trace_id != trace_id} <= {"WaitJob"}
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [r.name for r in roots] == ["client"]
    assert all(s.parent_span_id in ids for s in spans if s is not roots[0]), "a span's parent is missing"

    parent = {s.span_id: s for s in spans}
    (submit,) = _by_name(spans, "SubmitJob")
    assert (submit.service, parent[submit.parent_span_id].name) == ("dispatchd-control-plane", "client")
    assert submit.attributes["dispatchd.job_id"] == job.job_id
    assigns, attempts, results = (_by_name(spans, name) for name in ("assign", "attempt", "result"))
    for number, (assign, attempt, result) in enumerate(zip(assigns, attempts, results, strict=True), start=1):
        assert assign.service == result.service == "dispatchd-worker-gateway"
        assert attempt.service == "dispatchd-worker"
        assert assign.parent_span_id == submit.span_id
        assert attempt.parent_span_id == assign.span_id
        assert result.parent_span_id == attempt.span_id
        assert attempt.attributes["dispatchd.attempt"] == number
        assert attempt.attributes["dispatchd.worker_id"] == traced_stack.workers[0]
        assert attempt.attributes["dispatchd.job_id"] == job.job_id
        assert attempt.attributes["dispatchd.job_type"] == "builtin.flaky"
        assert attempt.attributes["dispatchd.execution_id"] == assign.attributes["dispatchd.execution_id"]
    assert [a.attributes["dispatchd.outcome"] for a in attempts] == ["failed", "succeeded"]
    assert [r.attributes["dispatchd.outcome"] for r in results] == ["failed", "succeeded"]

    # The worker's log line about the failed attempt joins the trace, the job and the execution.
    worker_log = traced_stack.processes[traced_stack.workers[0]].log_path

    def failure_logged() -> bool:
        return any(str(line["msg"]).startswith("handler for builtin.flaky failed") for line in _log_lines(worker_log))

    wait_until(failure_logged, what="the worker logging the failed attempt")
    (line,) = [line for line in _log_lines(worker_log) if str(line["msg"]).startswith("handler for builtin.flaky")]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == attempts[0].span_id
    assert line["job_id"] == job.job_id
    assert line["execution_id"] == attempts[0].attributes["dispatchd.execution_id"]
