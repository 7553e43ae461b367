"""Waiting for the gateway to accept a stream's registration, and telling refusals apart.

Invariant: `RegistrationRejected` means the same registration cannot succeed by retrying
(the gateway said no, or the call failed with a status retrying cannot change) and stops
the worker; every other way the wait can end is a `ConnectionError`, which the worker
retries with backoff.
"""

from __future__ import annotations

import asyncio

import grpc

REGISTRATION_TIMEOUT_SECONDS = 15.0

# PERMISSION_DENIED cannot change by retrying; UNAUTHENTICATED may (a rotated token file), and
# so may FAILED_PRECONDITION: a passive region's gateway refuses streams with it until the
# region is promoted (a worker that gave up then would never come back after a failover).
_REJECTING_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
)


class RegistrationRejected(Exception):
    """The gateway refused the registration; retrying the same one cannot succeed."""


async def await_registration(registered: asyncio.Event, reader: asyncio.Task[None]) -> None:
    """Return once `registered` is set; raise if the stream's reader ends or time runs out first."""
    waiting = asyncio.create_task(registered.wait())
    try:
        await asyncio.wait([waiting, reader], timeout=REGISTRATION_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if registered.is_set():
        return
    if not reader.done():
        raise ConnectionError("the gateway did not acknowledge the registration")
    exc = reader.exception() if not reader.cancelled() else None
    if isinstance(exc, RegistrationRejected):
        raise exc
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in _REJECTING_CODES:
            raise RegistrationRejected(f"{exc.code().name}: {exc.details() or ''}")
        raise ConnectionError(f"{exc.code().name}: {exc.details()}")
    raise ConnectionError(f"the stream ended before the registration was acknowledged ({exc})")
