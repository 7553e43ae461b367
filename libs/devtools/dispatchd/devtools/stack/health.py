"""The one way to wait for a dispatchd service: grpc.health.v1 `Check(service="")` until SERVING.

Every launcher (`make up`, perf, the tests) waits through `wait_serving`, so "healthy" means
the same thing everywhere: the process answers the standard health service with SERVING.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dispatchd.common.security import ClientSecurity

# Local addresses: never route them through an *_proxy from the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
POLL_SECONDS = 0.1


def check_serving(target: str, security: ClientSecurity | None = None, timeout: float = 1.0) -> str | None:
    """None when `target` says SERVING, else what it said instead (a status or an RPC error)."""
    # A fresh channel per probe: a long-lived one backs off for seconds after a refusal.
    with (security or ClientSecurity()).sync_channel(target, options=CHANNEL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"


def wait_serving(
    target: str,
    timeout: float,
    security: ClientSecurity | None = None,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Poll `target` until SERVING; `alive()` runs before each probe and raises if waiting is futile.

    Raises TimeoutError naming the last answer when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive()
        last = check_serving(target, security)
        if last is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not SERVING at {target} within {timeout:.0f}s ({last})")
        time.sleep(POLL_SECONDS)
