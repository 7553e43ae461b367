"""A counting OTLP trace endpoint for the perf runs: accepts every export, keeps only counts.

Invariant: it answers the OpenTelemetry collector's gRPC TraceService as a collector would
(so exporters behave exactly as in production: batch, export, succeed) and keeps nothing but
the number of spans per `service.name`, so receiving costs as little as the wire decode.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: Counter[str] = Counter()

    def Export(  # noqa: N802 - the OTLP method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        counted: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
            counted[names[0] if names else ""] += sum(len(s.spans) for s in resource_spans.scope_spans)
        with self._lock:
            self._spans.update(counted)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> dict[str, int]:
        with self._lock:
            return dict(self._spans)


@contextmanager
def sink() -> Iterator[tuple[TraceSink, str]]:
    """A running sink and its endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT)."""
    receiver = TraceSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)
