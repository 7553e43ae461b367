"""Server interceptors: domain errors become gRPC statuses here, once, at the edge.

`STATUS_OF` is the only place a domain error meets a status code; anything it does not
name is INTERNAL with a generic message (the details go to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import grpc
import redis.exceptions

from dispatchd.platform import metrics
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


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps unary handlers so a DispatchdError (or a lost store) maps to its status code."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except (grpc.aio.AbortError, grpc.RpcError):
                raise
            except Exception as exc:  # translated exactly once, here
                await abort_for(exc, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
