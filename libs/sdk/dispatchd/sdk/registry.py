"""Handlers by job type. The registered job types are the worker's capabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatchd.common import names, routing
from dispatchd.sdk.task import Task

# Handlers should be coroutine functions; a plain function's return value is used as is
# (and it runs on the event loop, so it must not block).
Handler = Callable[[Task], Any]


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str, handler: Handler) -> None:
        names.job_type(job_type, "handler")  # InvalidName, a ValueError, at registration time
        if job_type in self._handlers:
            raise ValueError(f"a handler for {job_type!r} is already registered")
        if not callable(handler):
            raise TypeError(f"the handler for {job_type!r} is not callable")
        self._handlers[job_type] = handler

    def resolve(self, job_type: str) -> Handler | None:
        """The handler of the most specific registered type that runs `job_type`."""
        best: str | None = None
        for capability in self._handlers:
            if routing.capability_matches(capability, job_type) and (best is None or len(capability) > len(best)):
                best = capability
        return None if best is None else self._handlers[best]

    @property
    def capabilities(self) -> list[str]:
        return sorted(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers
