"""Log notices: tell log followers (FollowLogs) that lines were stored, one PUBLISH per window.

Invariant: every stored log line is followed, within `window` seconds, by a notice naming its
execution; the notices of all streams in that window go out as one message (a JSON list of
execution ids), so a chatty handler costs Redis one publish per window, not one per chunk, and
a gateway that stores no log lines publishes nothing. A notice is a hint: followers also
re-read on a slow timer, so a notice lost with Redis delays a line, never loses it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from dispatchd.platform import metrics
from dispatchd.platform.queues import ReadyQueues

log = logging.getLogger("dispatchd.gateway.log_notices")

# Long enough to gather a burst of chunks into one message, short enough to read as live.
WINDOW_SECONDS = 0.05


class LogNotices:
    def __init__(self, queues: ReadyQueues, *, window: float = WINDOW_SECONDS) -> None:
        self.queues = queues
        self.window = window
        self._pending: set[str] = set()
        self._flushing: asyncio.Task[None] | None = None

    def stored(self, execution_id: uuid.UUID) -> None:
        """A line of this execution was committed; the notice goes out at the end of the window."""
        self._pending.add(str(execution_id))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(self.window)
            pending, self._pending = self._pending, set()
            await self.queues.publish_log_notice(pending)
        except Exception as exc:  # followers re-read on their safety timer
            metrics.count_store_error(exc, "redis")
            log.warning("could not publish a log notice: %s", exc)
        finally:
            self._flushing = None
        if self._pending:  # stored while the publish was in flight
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
