"""The gRPC server metrics: every call counted once by method and status code, unary latency observed.

Invariant: `MetricsInterceptor` is the outermost interceptor of every service, so each call
passes it exactly once, whatever refuses it later (authentication, authorization, a passive
region, a malformed request) or however the handler ends; the code is the status the caller
gets. Streams are counted when they end and are open in `dispatchd_grpc_server_streams` while
they last; their duration is not observed (a worker stream lasts as long as the worker).

Labels: `service` (this process) and `method` as `Service/Method` without the package
(`JobService/SubmitJob`, `WorkerService/Connect`, `Health/Check`); methods no service
registers never reach an interceptor (gRPC answers UNIMPLEMENTED itself). Children are bound
once per method and per code, so a call costs two dict lookups, an increment and an observe.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from prometheus_client import Counter, Gauge, Histogram

from dispatchd.common.metrics import Bound
from dispatchd.platform.interceptors import Handler, HandlerInterceptor, Wrappers, relay, rewrap, status_of_call

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

REQUESTS = Counter(
    "dispatchd_grpc_server_requests_total", "gRPC calls handled, by status code.", ["service", "method", "code"]
)
DURATION = Histogram(
    "dispatchd_grpc_server_request_duration_seconds",
    "Duration of unary gRPC calls.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STREAMS = Gauge("dispatchd_grpc_server_streams", "Streaming gRPC calls open now.", ["service", "method"])


def method_label(path: str) -> str:
    """`/dispatchd.v1.JobService/SubmitJob` -> `JobService/SubmitJob`."""
    service, _, name = path.lstrip("/").rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}" if service else path


class MethodMetrics:
    """The children of one method, bound on its first call."""

    __slots__ = ("duration", "requests", "streams")

    def __init__(self, service: str, method: str) -> None:
        self.duration = DURATION.labels(service, method)
        self.streams = STREAMS.labels(service, method)
        self.requests: Bound[grpc.StatusCode, Counter] = Bound(
            lambda code: REQUESTS.labels(service, method, code.name)
        )

    def ended(self, context: Context, exc: BaseException | None) -> None:
        self.requests(status_of_call(context, exc)).inc()


class MetricsInterceptor(HandlerInterceptor):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._metrics: Bound[str, MethodMetrics] = Bound(lambda path: MethodMetrics(service, method_label(path)))

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        return rewrap(handler, _MEASURED, self._metrics(details.method))


def _awaited(metrics: MethodMetrics, inner: Any, *, stream: bool) -> Callable[[Any, Context], Awaitable[Any]]:
    """Unary calls (timed) and client-streaming calls (open while they last): one response, awaited."""

    async def handle(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        if stream:
            metrics.streams.inc()
        failure: BaseException | None = None
        try:
            return await inner(request, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if stream:
                metrics.streams.dec()
            else:
                metrics.duration.observe(time.perf_counter() - started)
            metrics.ended(context, failure)

    return handle


def _streaming(metrics: MethodMetrics, inner: Any) -> Callable[[Any, Context], AsyncIterator[Any]]:
    """Server-streaming and bidirectional calls alike: `inner` takes a request or the request iterator."""

    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        metrics.streams.inc()
        failure: BaseException | None = None
        try:
            async for response in relay(inner(request, context)):
                yield response
        except BaseException as exc:
            failure = exc
            raise
        finally:
            metrics.streams.dec()
            metrics.ended(context, failure)

    return handle


def _unary(metrics: MethodMetrics, inner: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    return _awaited(metrics, inner, stream=False)


def _client_streaming(metrics: MethodMetrics, inner: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    return _awaited(metrics, inner, stream=True)


_MEASURED = Wrappers(_unary, _streaming, _client_streaming, _streaming)
