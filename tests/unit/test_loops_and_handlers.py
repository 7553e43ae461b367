"""Per-process runtime choices that are easy to lose silently: uvloop, protobuf's upb, wrappers made once per method."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from dispatchd.common import loops
from dispatchd.platform.interceptors import Handler, HandlerInterceptor


async def _runtime() -> dict[str, str]:
    return loops.runtime()


def test_processes_run_on_uvloop_with_the_upb_protobuf_backend() -> None:
    assert loops.run(_runtime()) == {"event_loop": "uvloop.Loop", "protobuf": "upb"}


class _Counting(HandlerInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.wraps = 0

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        self.wraps += 1
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _echo(request: Any, context: Any) -> Any:
    return request


def test_a_method_is_wrapped_once_while_the_handler_inside_stays_the_same() -> None:
    interceptor = _Counting()
    inner = grpc.unary_unary_rpc_method_handler(_echo)

    async def calls(handler: Handler, *methods: str) -> list[Handler]:
        async def continuation(details: grpc.HandlerCallDetails) -> Handler:
            return handler

        return [await interceptor.intercept_service(continuation, _Details(m)) for m in methods]

    first, again, other = asyncio.run(calls(inner, "/s/A", "/s/A", "/s/B"))
    assert first is again and other is not first and interceptor.wraps == 2
    # A different handler inside (an interceptor that wraps per call) is wrapped afresh.
    (fresh,) = asyncio.run(calls(grpc.unary_unary_rpc_method_handler(_echo), "/s/A"))
    assert fresh is not first and interceptor.wraps == 3
