"""What a handler receives (a Task) and how its outcome becomes a TaskResult."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

LogSink = Callable[[str, str], Awaitable[None]]


class TaskCancelled(Exception):
    """The execution was cancelled (its job was cancelled or timed out).

    Raised by `Task.raise_if_cancelled()`; a handler may also raise it itself. Either way
    the attempt is reported as failed with the message "cancelled".
    """


class HandlerFailed(Exception):
    """The attempt failed, and here is a result to keep anyway (e.g. a command's output)."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.result = result


async def _discard(message: str, stream: str) -> None:
    return None


@dataclass
class Task:
    """One attempt of a job, as handed to its handler."""

    execution_id: str
    job_id: str
    job_type: str
    payload: bytes
    attempt: int
    metadata: dict[str, str] = field(default_factory=dict)
    lease_expires_at: dt.datetime | None = None
    # Seconds this attempt may run (the job's execution timeout); None means no limit.
    # When it passes, `cancelled` is set and the handler is cancelled.
    execution_timeout: float | None = None
    # Set when the gateway cancels the execution, just before the handler is cancelled;
    # handlers that run work outside the event loop can watch it.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _log_sink: LogSink = field(default=_discard, repr=False)

    def json(self) -> Any:
        """The payload decoded as JSON (None for an empty payload)."""
        return json.loads(self.payload) if self.payload else None

    def text(self) -> str:
        return self.payload.decode()

    async def log(self, message: str, stream: str = "log") -> None:
        """Send a log line for this execution (stored with it; `stream` is e.g. stdout/stderr)."""
        await self._log_sink(message, stream)

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled("cancelled")


def encode_result(value: object) -> bytes:
    """A handler's return value as result bytes: bytes as is, str UTF-8, dict/list JSON, None empty."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":")).encode()
    raise TypeError(f"handler returned {type(value).__name__}; return bytes, str, dict, list or None")


def describe_error(exc: BaseException) -> str:
    """'ExcType: message' (or just the type when the message is empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
