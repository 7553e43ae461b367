"""The client the commands use (`dispatchd.client.Client`) and how its failures read on the
command line.

Invariant: dispatchctl talks to the control plane only through `dispatchd.client`; this
module only opens it, turns its exceptions into one line for stderr and, when an OTLP
endpoint is configured, makes the command one span that its calls' server spans join.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

from opentelemetry import trace

from dispatchd.client import Client, ClientSecurity, DeadlineExceeded, DispatchdError, Unavailable
from dispatchd.common import tracing

# grpc's wording when no connection could be made at all (as opposed to a server answering UNAVAILABLE).
# How gRPC words "no connection": pick_first says "failed to connect to all addresses",
# round_robin (our channels' policy) "connections to all backends failing".
_CONNECT_FAILURES = (
    "failed to connect",
    "connections to all backends failing",
    "connection refused",
    "dns resolution failed",
    "connect failed",
)


class CliError(Exception):
    """A failure to report as one line on stderr; the process exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def open_client(target: str, timeout: float, security: ClientSecurity) -> Client:
    return Client(target, security=security, timeout=dt.timedelta(seconds=timeout))


@contextlib.contextmanager
def traced(command: str) -> Iterator[None]:
    """The command as a span ("dispatchctl submit"), exported before it returns; nothing when tracing is off."""
    if not tracing.configure_tracing("dispatchctl"):
        yield
        return
    try:
        with tracing.tracer().start_as_current_span(f"dispatchctl {command}", kind=trace.SpanKind.CLIENT):
            yield
    finally:
        tracing.stop_tracing()


def describe(exc: DispatchdError, target: str, timeout: float) -> CliError:
    """One line for a failed call: the status and the server's message."""
    if isinstance(exc, Unavailable) and any(m in exc.details.lower() for m in _CONNECT_FAILURES):
        return CliError(f"cannot reach the control plane at {target} (is it running?)")
    if isinstance(exc, DeadlineExceeded):
        return CliError(
            f"DEADLINE_EXCEEDED: no answer from the control plane at {target} within {timeout:g}s (raise --timeout?)"
        )
    return CliError(str(exc))
