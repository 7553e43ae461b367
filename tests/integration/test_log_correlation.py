"""Log lines written inside a job carry its trace, span, job and execution ids; handler spans nest.

In-process: the SDK's executions run a handler that logs and makes a span of its own while
logging is configured as a worker configures it (through the queue and its writer thread) and
spans go to an in-memory exporter. The ids must be read on the handler's thread: the writer
thread has neither the job's context variable nor its current span.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatchd.common import observability, tracing
from dispatchd.sdk.executions import Executions
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.registry import Registry
from dispatchd.sdk.task import Task
from dispatchd.v1 import worker_service_pb2 as pb

# A job's context as the gateway's "assign" span would hand it over.
ASSIGNED = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
app_log = logging.getLogger("app")


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    observability.configure_logging("test", "INFO", as_json=True)
    try:
        yield stream
    finally:
        observability.stop_logging()
        root.handlers[:], root.level = saved


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.stop_tracing()


async def _run(assignment: pb.TaskAssignment) -> pb.TaskResult:
    async def handler(task: Task) -> str:
        with tracing.tracer().start_as_current_span("user work"):
            app_log.info("inside the handler")
        return "ok"

    registry = Registry()
    registry.register("t", handler)
    outbox = Outbox()
    executions = Executions(registry, asyncio.Semaphore(1), outbox, "worker-7")
    executions.start(assignment)
    await executions.idle.wait()
    app_log.info("outside any job")
    while (message := await outbox.get()) is not None and message.WhichOneof("payload") != "result":
        pass
    assert message is not None
    return message.result


def _lines(stream: io.StringIO) -> dict[str, dict[str, str]]:
    observability.stop_logging()  # the writer thread has written everything
    return {line["msg"]: line for line in map(json.loads, stream.getvalue().splitlines())}


def _assignment(**fields: object) -> pb.TaskAssignment:
    return pb.TaskAssignment(execution_id="e-1", job_id="j-1", job_type="t", attempt=2, **fields)  # type: ignore[arg-type]


async def test_a_handler_log_line_carries_its_trace_span_job_and_execution(
    stderr: io.StringIO, spans: InMemorySpanExporter
) -> None:
    result = await _run(_assignment(trace_context=ASSIGNED))
    attempt, user = (next(s for s in spans.get_finished_spans() if s.name == n) for n in ("attempt", "user work"))
    assert attempt.parent is not None and format(attempt.parent.span_id, "016x") == "b7ad6b7169203331"
    assert user.parent is not None and user.parent.span_id == attempt.context.span_id
    assert dict(attempt.attributes or {}) == {
        "dispatchd.job_id": "j-1",
        "dispatchd.job_type": "t",
        "dispatchd.execution_id": "e-1",
        "dispatchd.attempt": 2,
        "dispatchd.worker_id": "worker-7",
        "dispatchd.outcome": "succeeded",
    }
    # The result names the attempt span, for the gateway's "result" span to hang under.
    carried = trace.get_current_span(tracing.parent(result.trace_context)).get_span_context()
    assert (carried.trace_id, carried.span_id) == (attempt.context.trace_id, attempt.context.span_id)

    lines = _lines(stderr)
    inside = lines["inside the handler"]
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert inside["span_id"] == format(user.context.span_id, "016x")
    assert (inside["job_id"], inside["execution_id"]) == ("j-1", "e-1")
    assert not {"trace_id", "span_id", "job_id", "execution_id"} & set(lines["outside any job"])


async def test_with_tracing_off_lines_carry_the_job_and_the_result_passes_the_context_on(
    stderr: io.StringIO,
) -> None:
    assert not tracing.enabled()
    result = await _run(_assignment(trace_context=ASSIGNED))
    assert dict(result.trace_context) == ASSIGNED
    inside = _lines(stderr)["inside the handler"]
    assert (inside["job_id"], inside["execution_id"]) == ("j-1", "e-1")
    assert "trace_id" not in inside


# The same job's context when its root was not sampled (flags 00).
UNSAMPLED = {"traceparent": ASSIGNED["traceparent"][:-2] + "00"}


async def test_an_unsampled_trace_makes_no_span_and_passes_the_context_on_unchanged(
    stderr: io.StringIO, spans: InMemorySpanExporter
) -> None:
    result = await _run(_assignment(trace_context=UNSAMPLED))
    # Not even the handler's own span: it joined the unsampled trace instead of starting one.
    assert spans.get_finished_spans() == ()
    assert dict(result.trace_context) == UNSAMPLED
    inside = _lines(stderr)["inside the handler"]
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_recording_a_span_of_an_unsampled_trace_returns_its_carrier(spans: InMemorySpanExporter) -> None:
    kind = trace.SpanKind.INTERNAL
    assert tracing.record("assign", UNSAMPLED, kind, {}) == UNSAMPLED
    assert spans.get_finished_spans() == ()
    carried = tracing.record("assign", ASSIGNED, kind, {})
    (span,) = spans.get_finished_spans()
    assert carried["traceparent"] == f"00-0af7651916cd43dd8448eb211c80319c-{span.context.span_id:016x}-01"
    # No traceparent, or a malformed one: a new trace, its root decides (sampled here).
    assert tracing.sampled({"traceparent": "00-abc-00"})
    assert tracing.sampled({}) and not tracing.sampled(UNSAMPLED)
