"""Undecodable request bytes are the caller's INVALID_ARGUMENT, never UNKNOWN.

gRPC decodes a request before any handler runs; when the deserializer raises, grpc's own
machinery answers UNKNOWN naming the exception class and logs a traceback, on every such
call. `tolerant` wraps a deserializer so a decode failure becomes a `Malformed` marker the
handler wrapper refuses instead. The security interceptor does this on the service ports
(after admitting the caller, so the refusal is audited); `DecodeInterceptor` does it on a
server without one, the plaintext health port. Both pass a streaming handler's responses through
`relay`, which accepts the two shapes grpc.aio allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from dispatchd.platform.interceptors import Handler, HandlerInterceptor, Wrappers, relay, rewrap

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Malformed:
    """Stands in for a request whose bytes did not decode, so the handler wrapper can refuse it."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # any decode failure is the caller's malformed request
            # protobuf's message names the expected type; never the Python exception class.
            return Malformed(str(exc) or "the bytes do not decode")

    return deserialize


def refusal(method: str, bad: Malformed) -> str:
    return f"request is not a valid message for {method}: {bad.problem}"


class DecodeInterceptor(HandlerInterceptor):
    """Refuses undecodable requests (and stream messages) with INVALID_ARGUMENT."""

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        return rewrap(handler, _WRAPPERS, details.method, tolerant(handler.request_deserializer))


async def _check(method: str, request: Any, context: Context) -> None:
    if isinstance(request, Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal(method, request))


def _unary(method: str, inner: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    async def handle(request: Any, context: Context) -> Any:
        await _check(method, request, context)
        return await inner(request, context)

    return handle


def _unary_stream(method: str, inner: Any) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        await _check(method, request, context)
        async for response in relay(inner(request, context)):
            yield response

    return handle


async def _checked(method: str, requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        await _check(method, request, context)
        yield request


def _stream_unary(method: str, inner: Any) -> Callable[[AsyncIterator[Any], Context], Awaitable[Any]]:
    async def handle(requests: AsyncIterator[Any], context: Context) -> Any:
        return await inner(_checked(method, requests, context), context)

    return handle


def _stream_stream(method: str, inner: Any) -> Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for response in relay(inner(_checked(method, requests, context), context)):
            yield response

    return handle


_WRAPPERS = Wrappers(_unary, _unary_stream, _stream_unary, _stream_stream)
