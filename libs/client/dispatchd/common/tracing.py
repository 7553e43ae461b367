"""Traces: OpenTelemetry spans exported over OTLP/gRPC, off unless an OTLP endpoint is configured.

Invariant: `enabled()` stays False until `configure_tracing` finds OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or a caller `install`s a provider. Every place that would
make a span asks `enabled()` first, so with tracing off no span object is ever created on a hot
path. Trace context crosses a process boundary only as a W3C carrier, a str -> str map holding
`traceparent` (and `tracestate`): in gRPC metadata, stored with a job, on the stream's
TaskAssignment and TaskResult. Exporting, batching and sampling are the OpenTelemetry SDK's and
read its standard variables (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_*,
OTEL_EXPORTER_OTLP_*); only the default sampler is ours: parent-based, DEFAULT_RATIO of new
traces.

The root's sampling decision is the trace's: a carrier whose traceparent says "not sampled"
(flags 00) is passed on unchanged and no span work is done for it, not even an OpenTelemetry
object (`sampled` reads the flags with string operations), so at the default ratio nine jobs
in ten pay for tracing no more than a dict copy.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Protocol, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator

# Share of new traces recorded unless OTEL_TRACES_SAMPLER says otherwise (the SDK's own default
# records every one, which costs a job pipeline far more than it tells).
DEFAULT_RATIO = 0.1
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The only metadata keys read or written: W3C Trace Context, not whatever OTEL_PROPAGATORS names.
KEYS = ("traceparent", "tracestate")
INSTRUMENTATION = "dispatchd"
# Span attributes, one spelling for every process.
JOB_ID = "dispatchd.job_id"
JOB_TYPE = "dispatchd.job_type"
EXECUTION_ID = "dispatchd.execution_id"
ATTEMPT = "dispatchd.attempt"
WORKER_ID = "dispatchd.worker_id"
OUTCOME = "dispatchd.outcome"

# A version-00 traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"; later
# versions may append "-..." fields, the flags stay at the same offset.
_TRACEPARENT_LENGTH = 55
_FLAGS_LOW_DIGIT = _TRACEPARENT_LENGTH - 1
# The last hex digit of the flags byte with bit 0 (sampled) set.
_SAMPLED_DIGITS = frozenset("13579bdfBDF")

_W3C = TraceContextTextMapPropagator()
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: trace.TracerProvider | None = None
# With dispatchd's own default sampler: the sampled share of new traces as TraceIdRatioBased
# bounds it (trace ids whose low 64 bits are below it are sampled), and the id generator a
# call's trace id is planned through. None (any other sampler): every call goes to the SDK.
_root_bound: int | None = None
_planned: _PlannedIds | None = None
# The carrier of a call that records nothing (see `begin`), for `current_carrier`.
_passed: ContextVar[dict[str, str] | None] = ContextVar("dispatchd_unsampled_carrier", default=None)
_LOW_64 = (1 << 64) - 1


def enabled() -> bool:
    return _enabled


def tracer() -> trace.Tracer:
    """dispatchd's tracer (a no-op one while tracing is off)."""
    return _tracer


def endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP endpoint tracing would export to, or None (tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return next((environ[name] for name in ENDPOINT_VARIABLES if environ.get(name, "").strip()), None)


def configure_tracing(service: str) -> bool:
    """Export this process's spans over OTLP when an endpoint is configured; True if tracing is on."""
    if _enabled or endpoint() is None:
        return _enabled
    # Imported here: a process with tracing off never loads the SDK nor the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"dispatchd-{service}"
    resource = Resource.create({"service.name": name})
    default: tuple[float, _PlannedIds] | None = None
    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():  # the SDK's sampler of that name decides
        provider = TracerProvider(resource=resource)
    else:
        ratio = _default_ratio()
        provider, ids = default_provider(ratio, resource)
        default = (ratio, ids)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Global too, so a handler's own spans (trace.get_tracer(...)) go to the same exporter.
    trace.set_tracer_provider(provider)
    install(provider, default)
    return True


def _default_ratio() -> float:
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_RATIO))
    except ValueError:
        ratio = DEFAULT_RATIO
    return min(max(ratio, 0.0), 1.0)


class _PlannedIds(Protocol):
    """The SDK's id generator whose next trace id `begin` may plan."""

    planned: int | None

    def generate_trace_id(self) -> int: ...

    def generate_span_id(self) -> int: ...


def default_provider(ratio: float, resource: Resource | None = None) -> tuple[TracerProvider, _PlannedIds]:
    """A provider with dispatchd's default sampler at `ratio` and the id generator `begin` plans through."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    ids = _planned_ids()
    sampler = ParentBased(TraceIdRatioBased(ratio))
    provider = TracerProvider(sampler=sampler, resource=resource, id_generator=cast("IdGenerator", ids))
    return provider, ids


def _planned_ids() -> _PlannedIds:
    """The SDK's random ids, except that the next trace id may be planned (by `begin`)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PlannedIds(RandomIdGenerator):
        planned: int | None = None

        def generate_trace_id(self) -> int:
            planned, self.planned = self.planned, None
            return planned if planned is not None else super().generate_trace_id()

    return PlannedIds()


def install(provider: trace.TracerProvider, default: tuple[float, _PlannedIds] | None = None) -> None:
    """Make spans with `provider` from now on (`configure_tracing` does; an embedding application may).

    `default`: `provider` is `default_provider`'s, at this ratio with these ids, so `begin` may
    decide new traces itself; otherwise (a provider of the caller's) its sampler decides every call.
    """
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    global _enabled, _tracer, _provider, _root_bound, _planned
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)
    _enabled = True
    _root_bound, _planned = (
        (None, None) if default is None else (TraceIdRatioBased.get_bound_for_rate(default[0]), default[1])
    )


def stop_tracing() -> None:
    """Export what is still batched and stop making spans (idempotent)."""
    global _enabled, _tracer, _provider, _root_bound, _planned
    provider, _provider = _provider, None
    _enabled = False
    _root_bound = _planned = None
    _tracer = trace.NoOpTracer()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def sampled(carrier: Mapping[str, str]) -> bool:
    """False only when `carrier` holds a well-formed traceparent whose sampled flag is off.

    No traceparent (or a malformed one) is True: a span made from it starts a new trace, whose
    root decides. Cheap on purpose: it runs for every job on every hop.
    """
    traceparent = carrier.get("traceparent")
    if traceparent is None or len(traceparent) < _TRACEPARENT_LENGTH or traceparent[52] != "-":
        return True
    return traceparent[_FLAGS_LOW_DIGIT] in _SAMPLED_DIGITS


def parent(carrier: Mapping[str, str]) -> Context:
    """The context a carrier describes (an empty one when it holds no valid traceparent)."""
    return _W3C.extract(carrier)


def carrier_of(span: trace.Span | None = None) -> dict[str, str]:
    """`span`'s (default: the current span's) context as a carrier; {} when there is none."""
    out: dict[str, str] = {}
    _W3C.inject(out, context=None if span is None else trace.set_span_in_context(span))
    return out


def outgoing(metadata: Sequence[tuple[str, str | bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    """`metadata` plus the current span's context, when a span is active (whoever's provider made it)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return tuple(metadata)
    return (*metadata, *carrier_of().items())


def incoming(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The trace carrier among a call's metadata."""
    return {key: value for key, value in metadata or () if key in KEYS and isinstance(value, str)}


def start(
    name: str,
    carrier: Mapping[str, str],
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    start_ns: int | None = None,
) -> trace.Span:
    """A span child of `carrier`'s context (a new trace when it has none). Call only when enabled."""
    return _tracer.start_span(name, context=parent(carrier), kind=kind, attributes=attributes, start_time=start_ns)


def record(
    name: str,
    carrier: Mapping[str, str],
    kind: trace.SpanKind,
    attributes: Mapping[str, AttributeValue],
    start_ns: int | None = None,
    error: str | None = None,
) -> dict[str, str]:
    """A span that already happened (from `start_ns`, default now, to now); returns its carrier.

    For an unsampled `carrier` no span is made and the carrier itself comes back (a copy).
    """
    if not sampled(carrier):
        return dict(carrier)
    span = start(name, carrier, kind, attributes, start_ns)
    if error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error))
    span.end()
    return carrier_of(span)


def begin(
    name: str, carrier: Mapping[str, str], kind: trace.SpanKind, attributes: Mapping[str, AttributeValue]
) -> trace.Span | dict[str, str]:
    """A server call's span, or, for a call whose trace is not recorded, only the carrier it passes on.

    With dispatchd's default sampler a call that records nothing makes no OpenTelemetry object
    (in the server, starting a non-recording span and making it current cost the control plane
    ~0.09 ms per SubmitJob): a caller's unsampled context passes on as it came, and a new trace's
    sampling is decided here, on a trace id drawn here, by TraceIdRatioBased's own rule. A
    sampled new trace gets that very id from the SDK (`_planned_ids`), so the SDK's sampler,
    asked about the same id, agrees. With any other sampler every call is the SDK's.
    """
    if _root_bound is None or _planned is None:
        return start(name, carrier, kind, attributes)
    if "traceparent" in carrier:
        return dict(carrier) if not sampled(carrier) else start(name, carrier, kind, attributes)
    trace_id = random.getrandbits(128) or 1
    if trace_id & _LOW_64 < _root_bound:
        _planned.planned = trace_id
        return start(name, {}, kind, attributes)
    return {"traceparent": f"00-{trace_id:032x}-{random.getrandbits(64) or 1:016x}-00"}


def pass_on(carrier: dict[str, str]) -> Token[dict[str, str] | None]:
    """Make `carrier` (from `begin`, a call recording nothing) what `current_carrier` returns."""
    return _passed.set(carrier)


def passed(token: Token[dict[str, str] | None]) -> None:
    _passed.reset(token)


def passed_ids() -> tuple[str, str] | None:
    """The trace and span id (hex) of the unrecorded call's carrier, if one is current (for log lines)."""
    carrier = _passed.get()
    traceparent = carrier.get("traceparent", "") if carrier is not None else ""
    if len(traceparent) < _TRACEPARENT_LENGTH:
        return None
    return traceparent[3:35], traceparent[36:52]


def current_carrier() -> dict[str, str]:
    """What a job stored now carries on: the unrecorded call's carrier, else the current span's context."""
    carrier = _passed.get()
    return dict(carrier) if carrier is not None else carrier_of()


def now_ns() -> int:
    return time.time_ns()
