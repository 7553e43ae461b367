"""The channel to the control plane and how its failures read on the command line.

Everything about *how* to connect lives here, so transport options (TLS, tokens) have
one place to go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from dispatchd.cli import durations
from dispatchd.common.security import ClientSecurity, CredentialsError
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "DISPATCHD_CONTROL_PLANE_TARGET"
# Well below the server's 300 s cap, so idle proxies and load balancers keep the call open.
WAIT_CHUNK_SECONDS = 60.0
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}
# grpc's wording when no connection could be made at all (as opposed to a server answering UNAVAILABLE).
_CONNECT_FAILURES = ("failed to connect", "connection refused", "dns resolution failed", "connect failed")


class CliError(Exception):
    """A failure to report as one line on stderr; the process exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Connection:
    target: str
    timeout: float
    security: ClientSecurity = field(default_factory=ClientSecurity)

    def channel_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = []
        host = self.target.rsplit(":", 1)[0] if ":" in self.target else self.target
        if host.lower() in _LOOPBACK_HOSTS:
            # A proxy from the environment can never reach this machine's loopback.
            options.append(("grpc.enable_http_proxy", 0))
        return options

    def open(self) -> grpc.Channel:
        try:
            return self.security.sync_channel(self.target, options=self.channel_options())
        except CredentialsError as exc:
            raise CliError(str(exc), 2) from None

    def error(self, exc: grpc.RpcError) -> CliError:
        """One line for a failed call: the status and the server's message."""
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in _CONNECT_FAILURES):
            return CliError(f"cannot reach the control plane at {self.target} (is it running?)")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(
                f"DEADLINE_EXCEEDED: no answer from the control plane at {self.target} within "
                f"{self.timeout:g}s (raise --timeout?)"
            )
        return CliError(f"{code.name}: {details}" if details else code.name)


class Client:
    """The JobService stub; every call gets the --timeout deadline and readable errors."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel = connection.open()
        self.stub = job_service_pb2_grpc.JobServiceStub(self._channel)

    def call(
        self, method: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req, *, extra_seconds: float = 0.0
    ) -> Resp:
        try:
            metadata = self.connection.security.metadata()
        except CredentialsError as exc:
            raise CliError(str(exc), 2) from None
        try:
            return method(request, timeout=self.connection.timeout + extra_seconds, metadata=metadata)
        except grpc.RpcError as exc:
            raise self.connection.error(exc) from None

    def wait(self, job_id: str, timeout: float | None) -> job_service_pb2.WaitJobResponse:
        """WaitJob until the job is terminal or `timeout` seconds passed (None: no limit).

        The server caps one wait, so long waits are a series of calls.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_CHUNK_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = min(remaining, WAIT_CHUNK_SECONDS)
            request = job_service_pb2.WaitJobRequest(job_id=job_id, timeout=durations.to_proto(chunk))
            reply = self.call(self.stub.WaitJob, request, extra_seconds=chunk)
            if reply.terminal or (deadline is not None and time.monotonic() >= deadline):
                return reply

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
