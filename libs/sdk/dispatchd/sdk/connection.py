"""The gRPC side of a worker: channel creation and the Connect call.

TLS files and the bearer token come from a `ClientSecurity`; both are read again for every
channel and stream, so a reconnecting worker picks up rotated certificates and tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import grpc

from dispatchd.common import channels
from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc

# grpc.aio.EOF is missing from the type stubs.
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]



class ConnectCall(Protocol):
    """The parts of a grpc.aio stream-stream call the worker uses."""

    async def write(self, request: pb.ConnectRequest) -> None: ...
    async def read(self) -> Any: ...  # a ConnectResponse, or EOF
    async def done_writing(self) -> None: ...
    def cancel(self) -> bool: ...
    async def code(self) -> grpc.StatusCode: ...


def open_channel(target: str, security: ClientSecurity | None = None) -> grpc.aio.Channel:
    return (security or ClientSecurity()).aio_channel(target, profile=channels.STREAM)


def connect(channel: grpc.aio.Channel, token: str | None = None) -> ConnectCall:
    """The Connect call, authenticated with `token` (the stream keeps it until it sends a fresher one)."""
    stub: Any = pb_grpc.WorkerServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return cast(ConnectCall, stub.Connect(metadata=metadata))
