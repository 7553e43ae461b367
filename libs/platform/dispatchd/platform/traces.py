"""Server spans: one SERVER span per unary call, child of the caller's W3C context in its metadata.

Our own interceptor, not opentelemetry-instrumentation-grpc's: that one wraps every RPC, so
each worker's Connect stream would become one span open for hours that the jobs it carries
have nothing to do with (their traces start at SubmitJob and continue from the context stored
with the job); it reads whatever OTEL_PROPAGATORS names, where the job carries W3C Trace
Context only; and it would be one more dependency. This one is small, wraps only unary
methods, and is in the chain only when tracing is on (`serve` leaves it out otherwise), so
with tracing off a call pays nothing for it.

A call whose trace is not recorded (the caller's context says so, or the sampler decides so
for a new trace) gets no span at all, only its context made current for the handler
(`tracing.begin`, `tracing.current_carrier`).

Invariant: the span is current while the handler runs (a handler may store its context,
as SubmitJob does with the job, and log lines carry its ids), ends when the call does, and
is marked an error for every status but OK, with the status code as `rpc.grpc.status_code`.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace

from dispatchd.common import tracing
from dispatchd.platform.interceptors import Handler, HandlerInterceptor, metadata_of, with_unary
from dispatchd.platform.methods import HEALTH_SERVICE


def _code(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class TraceInterceptor(HandlerInterceptor):
    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        service, _, method = details.method.lstrip("/").partition("/")
        if handler.unary_unary is None or service == HEALTH_SERVICE:
            return handler
        inner: Any = handler.unary_unary
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span = tracing.begin(method, tracing.incoming(metadata_of(context)), trace.SpanKind.SERVER, attributes)
            if isinstance(span, dict):  # a trace not recorded: no span, its context passes on
                token = tracing.pass_on(span)
                try:
                    return await inner(request, context)
                finally:
                    tracing.passed(token)
            failed = True
            try:
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    response = await inner(request, context)
                failed = False
                return response
            finally:
                code = _code(context, failed)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
                span.end()

        return with_unary(handler, unary)
