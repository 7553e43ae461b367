"""The dashboard's health is the control plane's: followed through gRPC health `Watch`, not polled.

Invariant: SERVING exactly while the control plane's overall health says SERVING; any break of
the watch (control plane down, restarting, unreachable) is NOT_SERVING at once, and the watch
is re-opened after `RETRY_SECONDS` (gRPC's own reconnect backoff applies underneath), so no
loop asks the control plane anything on a timer. Health is public: no token is sent.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dispatchd.platform.health import HealthServicer

log = logging.getLogger(__name__)

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
RETRY_SECONDS = 1.0


async def follow_control_plane(channel: grpc.aio.Channel, servicer: HealthServicer) -> None:
    """Mirror the control plane's health into `servicer` until cancelled."""
    stub = health_pb2_grpc.HealthStub(channel)
    serving: bool | None = None

    async def mark(ok: bool) -> None:
        nonlocal serving
        if ok != serving:
            await servicer.set("", SERVING if ok else NOT_SERVING)
            serving = ok

    while True:
        try:
            # wait_for_ready: a control plane not up yet is waited for, not an error to retry.
            async for reply in stub.Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True):
                await mark(reply.status == SERVING)
            await mark(False)  # the control plane ended the watch: it is shutting down
        except grpc.RpcError as exc:
            if serving is not False:
                log.warning("lost the control plane's health: %s", exc.code().name)
            await mark(False)
        await asyncio.sleep(RETRY_SECONDS)
