"""Helpers for refusing client-streaming calls cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

# How long a refused stream waits for the client's first message before ending.
FIRST_MESSAGE_WAIT_SECONDS = 1.0


async def await_first_message(requests: AsyncIterator[Any], timeout: float = FIRST_MESSAGE_WAIT_SECONDS) -> None:
    """Before refusing a stream, let the client's first write land (bounded wait).

    An asyncio client whose write reaches a stream the server already ended reports
    INTERNAL "Internal error from Core" instead of our status (grpc/grpc#36066), so a
    worker would retry instead of learning why it is refused. Clients write first on Connect.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await anext(requests)
