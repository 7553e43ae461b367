"""Domain exceptions of the client, and the one place a gRPC status becomes one of them.

Invariant: `translate` is the only code that looks at a `grpc.RpcError`'s status code; every
public method raises a `DispatchdError` (with the RpcError as `__cause__`), never the RpcError.
"""

from __future__ import annotations

import grpc


class DispatchdError(Exception):
    """A call to dispatchd failed. `code` is the gRPC status name, `details` the server's message."""

    def __init__(self, details: str, code: str = "UNKNOWN") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


class JobNotFound(DispatchdError):
    """No job has this id (or the caller may not see it)."""


class InvalidArgument(DispatchdError):
    """The server rejected the request's values (e.g. an unknown job type pattern)."""


class AlreadyExists(DispatchdError):
    """What the request would create exists already."""


class FailedPrecondition(DispatchdError):
    """The job is not in a state that allows this (e.g. cancelling a finished job)."""


class PermissionDenied(DispatchdError):
    """The caller is known but its role does not allow this call."""


class Unauthenticated(DispatchdError):
    """No valid token (or client certificate) was presented."""


class ResourceExhausted(DispatchdError):
    """A server limit was reached (e.g. too many concurrent calls); retry later."""


class Unavailable(DispatchdError):
    """The control plane could not be reached or is not serving; raised after the retries."""


class DeadlineExceeded(DispatchdError):
    """No answer within the call's timeout."""


_BY_CODE: dict[grpc.StatusCode, type[DispatchdError]] = {
    grpc.StatusCode.NOT_FOUND: JobNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def translate(exc: grpc.RpcError) -> DispatchdError:
    """The domain exception for a failed call; the caller raises it `from exc`."""
    code: grpc.StatusCode = exc.code()
    return of_status(code, exc.details() or "")


def of_status(code: grpc.StatusCode, details: str) -> DispatchdError:
    """The domain exception for a status (a failed call's, or one job's in a batch)."""
    return _BY_CODE.get(code, DispatchdError)(details, code.name)


_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def of_code(value: int, details: str) -> DispatchdError:
    """The domain exception for a google.rpc code number (a refused job of a batch)."""
    return of_status(_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN), details)
