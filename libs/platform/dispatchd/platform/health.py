"""gRPC health as every dispatchd port serves it: Check, Watch and List.

grpcio-health-checking's asyncio servicer implements Check and Watch only; `List` (in the
health proto since 2024) fell through to the generated base class, whose NotImplementedError
every caller of the public method could turn into an INTERNAL with a logged traceback. Here
List answers a snapshot of every status `set` has recorded (the overall "" and each service).
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    async def List(  # noqa: N802
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        # The base class keeps the statuses; a copy, since `set` may run while this answers.
        statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )
