"""Domain errors: what went wrong, in the platform's terms, and nothing about transport.

Handlers and the store raise these; they know no gRPC (the store must not depend on it).
The translation to a status code happens once, at the edge: `interceptors.STATUS_OF`. A
message left out defaults to the class docstring.
"""

from __future__ import annotations


class DispatchdError(Exception):
    """A dispatchd operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidArgument(DispatchdError):
    """The request is malformed."""


class NotFound(DispatchdError):
    """The object does not exist."""


class AlreadyExists(DispatchdError):
    """The idempotency key is already used by a different request."""


class FailedPrecondition(DispatchdError):
    """The object is not in a state that allows this operation."""
