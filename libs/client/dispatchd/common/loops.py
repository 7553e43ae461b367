"""Event loops: every dispatchd process runs its asyncio code on uvloop, and says which runtime it got.

Invariant: `run` and `new_loop` give a uvloop loop wherever uvloop is installed (a dependency
of the client distribution on every platform but Windows) and the stock asyncio loop only where
it is not; `runtime()` names what this process actually runs on (loop, protobuf backend), for
the one startup line each process logs: a slower fallback is visible, never silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from google.protobuf.internal import api_implementation

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
else:
    new_loop = uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)` on uvloop (when installed)."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


def runtime() -> dict[str, str]:
    """What this process runs on: the event loop in use and the protobuf backend ("upb" is the fast one)."""
    loop = asyncio.get_running_loop()
    return {"event_loop": f"{type(loop).__module__}.{type(loop).__name__}", "protobuf": api_implementation.Type()}
