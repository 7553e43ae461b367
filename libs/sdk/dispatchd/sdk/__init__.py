"""dispatchd worker SDK: run job handlers behind a worker gateway.

    from dispatchd.sdk import Task, Worker

    worker = Worker("127.0.0.1:50052", max_concurrency=8)

    @worker.handler("email")
    async def send(task: Task) -> dict:
        await task.log("sending")
        return {"sent": True}

    asyncio.run(worker.run())

Names are imported on first use, so that `dispatchd-worker` can configure gRPC through
the environment before gRPC is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatchd.common.security import ClientSecurity
    from dispatchd.sdk.defaults import DEFAULT_TARGET
    from dispatchd.sdk.registration import RegistrationRejected
    from dispatchd.sdk.registry import Handler
    from dispatchd.sdk.task import HandlerFailed, Task, TaskCancelled, encode_result
    from dispatchd.sdk.worker import Worker

_HOMES = {
    "ClientSecurity": "dispatchd.common.security",
    "DEFAULT_TARGET": "dispatchd.sdk.defaults",
    "Handler": "dispatchd.sdk.registry",
    "HandlerFailed": "dispatchd.sdk.task",
    "RegistrationRejected": "dispatchd.sdk.registration",
    "Task": "dispatchd.sdk.task",
    "TaskCancelled": "dispatchd.sdk.task",
    "Worker": "dispatchd.sdk.worker",
    "encode_result": "dispatchd.sdk.task",
}

__all__ = [
    "DEFAULT_TARGET",
    "ClientSecurity",
    "Handler",
    "HandlerFailed",
    "RegistrationRejected",
    "Task",
    "TaskCancelled",
    "Worker",
    "encode_result",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dispatchd.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
