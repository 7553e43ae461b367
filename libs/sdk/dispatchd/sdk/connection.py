"""The gRPC side of a worker: channel creation and the Connect call.

TLS files and the bearer token come from a `ClientSecurity`; both are read again for every
channel and stream, so a reconnecting worker picks up rotated certificates and tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc

# grpc.aio.EOF is missing from the type stubs.
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

_CHANNEL_OPTIONS = [
    # The worker reconnects on its own schedule; keep gRPC's own backoff short.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


class ConnectCall(Protocol):
    """The parts of a grpc.aio stream-stream call the worker uses."""

    async def write(self, request: pb.ConnectRequest) -> None: ...
    async def read(self) -> Any: ...  # a ConnectResponse, or EOF
    async def done_writing(self) -> None: ...
    def cancel(self) -> bool: ...
    async def code(self) -> grpc.StatusCode: ...


def open_channel(target: str, security: ClientSecurity | None = None) -> grpc.aio.Channel:
    return (security or ClientSecurity()).aio_channel(target, options=_CHANNEL_OPTIONS)


def connect(channel: grpc.aio.Channel, token: str | None = None) -> ConnectCall:
    """The Connect call, authenticated with `token` (the stream keeps it until it sends a fresher one)."""
    stub: Any = pb_grpc.WorkerServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return cast(ConnectCall, stub.Connect(metadata=metadata))
