"""Server interceptors: domain errors become gRPC statuses here, once, at the edge.

`STATUS_OF` is the only place a domain error meets a status code; anything it does not
name is INTERNAL with a generic message (the details go to the log, never to the caller).
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias, cast

import asyncpg
import grpc
import redis.exceptions

from dispatchd.platform import disconnects, metrics
from dispatchd.platform.errors import AlreadyExists, DispatchdError, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger("dispatchd.rpc")

# Errors that mean "a backing store is unreachable right now": callers get UNAVAILABLE (and
# retry), never INTERNAL. Shared by every service so the list cannot drift.
STORE_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InterfaceError,  # e.g. "connection is closed"
    # A pooled connection left mid-operation when its server was killed (asyncpg#1069): fails before sending.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


STATUS_OF: Mapping[type[DispatchdError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_of(exc: DispatchdError) -> grpc.StatusCode | None:
    """The status of a domain error (its nearest mapped class), or None when none is mapped."""
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return None


async def abort_for(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Translate an exception raised by a handler into the matching status and abort."""
    code = status_of(exc) if isinstance(exc, DispatchdError) else None
    if code is not None:
        await context.abort(code, str(exc))
    if isinstance(exc, STORE_UNAVAILABLE):
        metrics.count_store_error(exc)
        log.warning("backing store unavailable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "a backing store is unavailable; retry later")
    log.exception("unhandled error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


async def relay(result: Any) -> AsyncIterator[Any]:
    """A server-streaming handler's responses, whether it yields them or writes them itself.

    grpc.aio lets such a handler be a coroutine that calls `context.write` (the asyncio health
    servicer's Watch is one); a wrapper that only iterated would fail it with a TypeError.
    """
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response


# A string: grpc's runtime classes are not subscriptable, only its stubs are.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class HandlerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that replaces the handler the server found for a method by `wrap`'s.

    A method without a handler (unknown to the server) passes untouched: gRPC answers UNIMPLEMENTED.
    `wrap` sees only the method, never the call (a wrapper reads a call's metadata from its
    context): so it runs once per method, and every later call of that method gets the same
    wrapped handler back, as long as the interceptors inside return the same handler too.
    """

    # False for an interceptor whose wrap depends on state that changes while the server
    # runs (the region fence): its `wrap` then runs on every call.
    cached: bool = True

    def __init__(self) -> None:
        # By method: the handler `wrap` was given and what it made of it.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if not self.cached:
            return self.wrap(handler, handler_call_details)
        method = handler_call_details.method
        made = self._wrapped.get(method)
        if made is not None and made[0] is handler:
            return made[1]
        wrapped = self.wrap(handler, handler_call_details)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @abc.abstractmethod
    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        """The handler that serves `details.method` instead (`handler` itself to leave it as it is)."""


class Wrappers(NamedTuple):
    """One wrapper per handler shape: `wrapper(bound, inner)` returns the behaviour that replaces `inner`."""

    unary_unary: Callable[[Any, Any], Any]
    unary_stream: Callable[[Any, Any], Any]
    stream_unary: Callable[[Any, Any], Any]
    stream_stream: Callable[[Any, Any], Any]


def rewrap(handler: Handler, wrappers: Wrappers, bound: Any, request_deserializer: Any = None) -> Handler:
    """`handler` with its behaviour wrapped by the wrapper of its shape (and, optionally, a new decoder)."""
    codec = (request_deserializer or handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrappers.unary_unary(bound, handler.unary_unary), *codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrappers.unary_stream(bound, handler.unary_stream), *codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrappers.stream_unary(bound, handler.stream_unary), *codec)
    return grpc.stream_stream_rpc_method_handler(wrappers.stream_stream(bound, handler.stream_stream), *codec)


def status_of_call(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> grpc.StatusCode:
    """The status a wrapped call ended with (the audit log and the request metrics agree on it).

    What the handler set or aborted with; else what its exception means: a cancellation, or a
    client that went away while a response was being written, is CANCELLED; anything else UNKNOWN.
    """
    code = context.code()
    if isinstance(code, grpc.StatusCode) and (exc is None or isinstance(exc, grpc.aio.AbortError)):
        return code
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError) or disconnects.went_away(exc):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def metadata_of(context: grpc.aio.ServicerContext[Any, Any]) -> Sequence[tuple[str, str | bytes]]:
    """A call's metadata: the (key, value) pairs grpc.aio hands a server (its stubs say a Mapping)."""
    return cast(Sequence[tuple[str, str | bytes]], context.invocation_metadata() or ())


def with_unary(handler: Handler, behaviour: Callable[..., Awaitable[Any]]) -> Handler:
    """A unary handler like `handler` (same codec) whose behaviour is `behaviour`."""
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class ErrorInterceptor(HandlerInterceptor):
    """Wraps unary and server-streaming handlers so a DispatchdError (or a lost store) maps to its status code.

    A write refused because the database turned read-only (demoted under us) is
    FAILED_PRECONDITION with `read_only(method)`'s message; that callback also tells the
    region fence to stop trusting its cached answer.
    """

    def __init__(self, read_only: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.read_only = read_only

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        if handler.unary_stream is not None:
            return _translating_stream(handler)
        if handler.unary_unary is None:
            return handler
        inner: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
        read_only, method = self.read_only, details.method

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except (grpc.aio.AbortError, grpc.RpcError):
                raise
            except asyncpg.exceptions.ReadOnlySQLTransactionError as exc:
                if read_only is None:
                    await abort_for(exc, context)
                    raise
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, read_only(method))
            except Exception as exc:  # translated exactly once, here
                await abort_for(exc, context)

        return with_unary(handler, unary)


def _translating_stream(handler: Handler) -> Handler:
    """A server-streaming handler whose errors, before or between its messages, become statuses
    as a unary handler's do (they only read: no read-only database to report)."""
    inner: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any] = handler.unary_stream  # type: ignore[assignment]

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for response in relay(inner(request, context)):
                yield response
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:  # translated exactly once, here
            await abort_for(exc, context)

    return grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
