"""One attempt as the logs and the trace see it: its ids, and its handler span when tracing is on.

Invariant: inside `with Attempt(...)` log lines carry the job and execution ids and, when
tracing is on, the "attempt" span is current, so spans the handler makes itself nest under it
(`opentelemetry.trace.get_tracer(...)` uses the provider `configure_tracing` installed). The
span is a child of the assignment's trace context and ends when the block does, with the
outcome as an attribute. The result always carries a trace context for the gateway's "result"
span: this span's, or (tracing off here, or the trace not sampled) the assignment's own, passed
through unchanged. With tracing off no span object is made; for an unsampled trace neither, only
the assignment's context is made current (one Context, no span), so spans the handler makes
itself stay in that unsampled trace rather than starting new traces of their own.
"""

from __future__ import annotations

import contextlib
from contextvars import Token
from types import TracebackType

from opentelemetry import context, trace
from opentelemetry.context import Context

from dispatchd.common import correlation, tracing
from dispatchd.sdk.task import Task
from dispatchd.v1 import worker_service_pb2 as pb

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "canceled"  # the spelling of the job status and the metrics' outcome label
TIMED_OUT = "timed_out"
# The stream went away before a result could be sent.
ABANDONED = "abandoned"


class Attempt:
    def __init__(self, task: Task, trace_context: dict[str, str], worker_id: str) -> None:
        self.task = task
        self.carrier = trace_context
        self.outcome = ABANDONED
        self.span: trace.Span | None = None
        self._ids = correlation.bound(job_id=task.job_id, execution_id=task.execution_id)
        self._current: contextlib.AbstractContextManager[trace.Span] | None = None
        self._unsampled: Token[Context] | None = None  # the unsampled trace's context, made current
        if tracing.enabled() and tracing.sampled(trace_context):
            self.span = tracing.start(
                "attempt",
                trace_context,
                trace.SpanKind.CONSUMER,
                {
                    tracing.JOB_ID: task.job_id,
                    tracing.JOB_TYPE: task.job_type,
                    tracing.EXECUTION_ID: task.execution_id,
                    tracing.ATTEMPT: task.attempt,
                    tracing.WORKER_ID: worker_id,
                },
            )
            self.carrier = tracing.carrier_of(self.span)

    def __enter__(self) -> Attempt:
        self._ids.__enter__()
        if self.span is not None:
            # Ended in __exit__, with the outcome; the result may be settled after the handler.
            self._current = trace.use_span(
                self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            )
            self._current.__enter__()
        elif tracing.enabled():
            self._unsampled = context.attach(tracing.parent(self.carrier))
        return self

    def settle(self, result: pb.TaskResult, outcome: str) -> None:
        """`result` is what the attempt came to: it carries the trace context on to the gateway."""
        self.outcome = outcome
        result.trace_context.update(self.carrier)
        if self.span is not None and not result.success:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, result.error_message[:256]))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._current is not None:
            self._current.__exit__(None, None, None)
        if self._unsampled is not None:
            context.detach(self._unsampled)
        self._ids.__exit__()
        if self.span is not None:
            self.span.set_attribute(tracing.OUTCOME, self.outcome)
            self.span.end()


def outcome_of(result: pb.TaskResult, timed_out: bool, cancelled: bool) -> str:
    if result.success:
        return SUCCEEDED
    if timed_out:
        return TIMED_OUT
    return CANCELLED if cancelled else FAILED
