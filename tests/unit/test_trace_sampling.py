"""`tracing.begin`: a call whose trace is not recorded makes no span; a new trace's decision agrees with the SDK's.

Its log lines still carry the ids of the context it passes on (`correlation.current`).

With dispatchd's default provider `begin` decides a new trace's sampling on a trace id it draws
itself and, when sampled, the SDK starts the span with that very id, so its own sampler (the
same rule on the same id) always agrees: the share recorded is the ratio, not its square. A
caller's unsampled context passes on as it came; a sampled one gets a child span. With a
provider of the caller's, every call is the SDK's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from dispatchd.common import correlation, tracing

SERVER = trace.SpanKind.SERVER
SAMPLED_PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
UNSAMPLED_PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}


@pytest.fixture
def ratio(request: pytest.FixtureRequest) -> Iterator[float]:
    chosen: float = request.param
    provider, ids = tracing.default_provider(chosen)
    tracing.install(provider, (chosen, ids))
    try:
        yield chosen
    finally:
        tracing.stop_tracing()


@pytest.mark.parametrize("ratio", [0.0], indirect=True)
def test_an_unsampled_new_trace_makes_no_span_only_a_carrier(ratio: float) -> None:
    begun = tracing.begin("SubmitJob", {}, SERVER, {})
    assert isinstance(begun, dict) and not tracing.sampled(begun)
    version, trace_id, span_id, flags = begun["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "00", 32, 16)
    token = tracing.pass_on(begun)
    try:
        assert tracing.current_carrier() == begun  # what SubmitJob stores with the job
        assert correlation.current() == {"trace_id": trace_id, "span_id": span_id}  # log lines join it
    finally:
        tracing.passed(token)
    assert tracing.current_carrier() == {} and correlation.current() == {}


@pytest.mark.parametrize("ratio", [1.0], indirect=True)
def test_a_sampled_new_trace_is_a_recording_root_span(ratio: float) -> None:
    begun = tracing.begin("SubmitJob", {}, SERVER, {"rpc.method": "SubmitJob"})
    assert isinstance(begun, trace.Span) and begun.is_recording()
    assert begun.get_span_context().trace_flags.sampled
    begun.end()


@pytest.mark.parametrize("ratio", [0.0, 1.0], indirect=True)
def test_a_callers_context_decides_whatever_the_ratio(ratio: float) -> None:
    assert tracing.begin("GetJob", UNSAMPLED_PARENT, SERVER, {}) == UNSAMPLED_PARENT
    child = tracing.begin("GetJob", SAMPLED_PARENT, SERVER, {})
    assert isinstance(child, trace.Span) and child.is_recording()
    assert f"{child.get_span_context().trace_id:032x}" == SAMPLED_PARENT["traceparent"].split("-")[1]
    child.end()


@pytest.mark.parametrize("ratio", [0.25], indirect=True)
def test_new_traces_are_sampled_at_the_ratio_and_the_sdk_always_agrees(ratio: float) -> None:
    begun = [tracing.begin("SubmitJob", {}, SERVER, {}) for _ in range(4000)]
    spans = [b for b in begun if isinstance(b, trace.Span)]
    assert all(s.is_recording() and s.get_span_context().trace_flags.sampled for s in spans)
    assert 0.21 <= len(spans) / len(begun) <= 0.29  # 4,000 draws at 0.25: sd 0.007
    for span in spans:
        span.end()


def test_with_a_provider_of_the_callers_every_call_is_the_sdks() -> None:
    tracing.install(TracerProvider())  # the SDK's default sampler: records everything
    try:
        begun = tracing.begin("SubmitJob", {}, SERVER, {})
        assert isinstance(begun, trace.Span) and begun.is_recording()
        begun.end()
    finally:
        tracing.stop_tracing()
