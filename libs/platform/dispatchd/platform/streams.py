"""Helpers for refusing or ending client-streaming calls cleanly.

Invariant: the server sends its status only once the client's writes have landed (or a
bounded wait has passed), so the client sees that status rather than INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

# How long a refused stream waits for the client's first message before ending.
FIRST_MESSAGE_WAIT_SECONDS = 1.0
# How long a stream being ended keeps dropping what its client still sends, and the pause
# that shows the client's writes have all landed.
DRAIN_SECONDS = 2.0
DRAIN_QUIET_SECONDS = 0.25


async def await_first_message(requests: AsyncIterator[Any], timeout: float = FIRST_MESSAGE_WAIT_SECONDS) -> None:
    """Before refusing a stream, let the client's first write land (bounded wait).

    An asyncio client whose write reaches a stream the server already ended reports
    INTERNAL "Internal error from Core" instead of our status (grpc/grpc#36066), so a
    worker would retry instead of learning why it is refused. Clients write first on Connect.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await anext(requests)


async def drain(requests: AsyncIterator[Any], limit: float = DRAIN_SECONDS, quiet: float = DRAIN_QUIET_SECONDS) -> None:
    """Before ending a stream its client still writes to, read and drop what it sends (bounded).

    Same reason as above: a write of the client still pending when the status arrives would
    replace the status. Stops once the client pauses for `quiet` seconds, or after `limit`.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit):
            while True:
                async with asyncio.timeout(quiet):
                    await anext(requests)
