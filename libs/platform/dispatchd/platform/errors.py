"""Domain errors. Handlers raise these; one interceptor turns them into gRPC statuses."""

from __future__ import annotations

import grpc


class DispatchdError(Exception):
    """A dispatchd operation failed."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidArgument(DispatchdError):
    """The request is malformed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DispatchdError):
    """The object does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DispatchdError):
    """The idempotency key is already used by a different request."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DispatchdError):
    """The object is not in a state that allows this operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DispatchdError):
    """A limit was reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DispatchdError):
    """A backing store is unreachable; retry later."""

    code = grpc.StatusCode.UNAVAILABLE
