"""The plumbing of a server interceptor that wraps each call's handler, written once.

Invariant: a `WrappingInterceptor` hands `wrap` the handler of every call a service serves
(gRPC itself answers calls to unknown methods) and the call's method path; `rewrap` rebuilds
a handler with the same shape (unary or streaming on each side) and codec, replacing only
its behaviour, so an interceptor states what it does around one call and nothing else.
`status_of_call` is the one reading of how a wrapped call ended (the audit log and the
request metrics agree on it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Shape = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]

_BUILD: dict[Shape, Callable[..., Handler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def rewrap(
    handler: Handler,
    wrap: Callable[[Shape, Any], Any],
    deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """`handler` with its behaviour replaced by `wrap(shape, behaviour)`; `deserializer` replaces its own."""
    codec = (deserializer or handler.request_deserializer, handler.response_serializer)
    for shape, build in _BUILD.items():
        behaviour = getattr(handler, shape)
        if behaviour is not None:
            return build(wrap(shape, behaviour), *codec)
    raise ValueError("a method handler without behaviour")


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self.wrap(handler_call_details, handler)

    def wrap(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """The handler this call runs instead of `handler`."""
        raise NotImplementedError


def status_of_call(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    """The status a wrapped call ended with: what the handler set or aborted with, else what its exception means."""
    code = context.code()
    if isinstance(code, grpc.StatusCode) and (exc is None or isinstance(exc, grpc.aio.AbortError)):
        return code
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
