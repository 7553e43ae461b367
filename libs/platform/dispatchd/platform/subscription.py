"""One Redis pub/sub subscription that stays up: subscribe, dispatch, keep alive, reconnect.

Invariant: while `run()` is running, the subscription is either confirmed (`ready` is set and
every message published since the confirmation reaches its handler) or being re-established.
Pub/sub is lossy across a disconnect, so every confirmation — the first, one after redis-py
reconnected by itself, and one after this loop reconnected — calls `on_reconnect`: callers
re-read whatever the messages would have told them. A half-open TCP connection never errors
on read, so an idle subscription pings and gives the connection up when a whole keepalive
period passes without any reply: a silent connection is detected within two keepalive periods.

Messages are dispatched inline from the read loop (no queue, no task per message), so a
handler must be quick and must not block; handler errors are logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("dispatchd.platform.subscription")

ChannelHandler = Callable[[str], None]
"""Called with the message's payload."""
PatternHandler = Callable[[str, str], None]
"""Called with the channel the message was published on and its payload."""


class KeepaliveTimeout(ConnectionError):
    """The server answered nothing, not even a ping, for a whole keepalive period."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _by_name(handlers: Mapping[str, Any]) -> dict[Any, Any]:
    # redis-py hands channel names back as bytes unless the client decodes responses:
    # index both spellings so dispatch is one dict lookup, not a decode per message.
    return {**handlers, **{name.encode(): handler for name, handler in handlers.items()}}


class Subscription:
    """Handlers by channel name and by pattern; `on_reconnect` after every confirmation (awaited
    in the read loop: keep it short, or schedule the work), `on_lost` when a connection is given up."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        name: str,
        channels: Mapping[str, ChannelHandler] | None = None,
        patterns: Mapping[str, PatternHandler] | None = None,
        on_reconnect: Callable[[], Awaitable[None] | None] | None = None,
        on_lost: Callable[[], None] | None = None,
        keepalive_seconds: float = 15.0,
        min_backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self.name = name
        self._channels = dict(channels or {})
        self._patterns = dict(patterns or {})
        if not self._channels and not self._patterns:
            raise ValueError("a subscription needs at least one channel or pattern")
        self._channel_handlers: dict[Any, ChannelHandler] = _by_name(self._channels)
        self._pattern_handlers: dict[Any, PatternHandler] = _by_name(self._patterns)
        # Redis confirms each name with the connection's running count: the last one is complete.
        self._complete_count = len(self._channels) + len(self._patterns)
        self._on_reconnect, self._on_lost = on_reconnect, on_lost
        self._keepalive = keepalive_seconds
        # Pause before the next attempt: doubles per failure up to the cap, reset by a confirmation.
        self._backoff_range = (min_backoff_seconds, max_backoff_seconds)
        self._backoff = min_backoff_seconds
        # Set while the subscription is confirmed; until then no silence can be trusted.
        self.ready = asyncio.Event()
        # Monotonic start of the current outage, for one warning per outage instead of per retry.
        self._down_since: float | None = None

    @property
    def subscribed(self) -> bool:
        return self.ready.is_set()

    async def run(self) -> None:
        """Keep the subscription up until cancelled; closes its connection on the way out."""
        task = asyncio.current_task()
        try:
            while True:
                try:
                    await self._listen(task)
                except Exception as exc:  # any failure means: reconnect after a pause
                    _honour_cancel(task, exc)
                    self._lost(exc)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, self._backoff_range[1])
        finally:
            self.ready.clear()

    async def _listen(self, task: asyncio.Task[Any] | None) -> None:
        pubsub = self._client.pubsub()
        try:
            if self._channels:
                await pubsub.subscribe(*self._channels)
            if self._patterns:
                await pubsub.psubscribe(*self._patterns)
            awaiting_pong = False
            while True:
                message = await pubsub.get_message(timeout=self._keepalive)
                _honour_cancel(task)
                if message is None:
                    if awaiting_pong:
                        raise KeepaliveTimeout(f"no reply to a ping for {self._keepalive:g}s")
                    await pubsub.ping()
                    awaiting_pong = True
                    continue
                awaiting_pong = False
                kind = message["type"]
                if kind == "message":
                    self._dispatch(self._channel_handlers.get(message["channel"]), message["data"])
                elif kind == "pmessage":
                    handler = self._pattern_handlers.get(message["pattern"])
                    self._dispatch(handler, message["channel"], message["data"])
                elif kind in ("subscribe", "psubscribe") and message["data"] == self._complete_count:
                    await self._confirmed()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, handler: Callable[..., None] | None, *raw: Any) -> None:
        if handler is None:
            return
        try:
            handler(*[_text(value) for value in raw])
        except Exception:  # a handler bug must not take the subscription down with it
            log.exception("%s: message handler failed", self.name)

    async def _confirmed(self) -> None:
        fields = {"subscription": self.name}
        if self._down_since is not None:
            fields["down_seconds"] = f"{time.monotonic() - self._down_since:.1f}"
            self._down_since = None
        log.info("%s: subscribed", self.name, extra={"fields": fields})
        self._backoff = self._backoff_range[0]
        self.ready.set()
        if self._on_reconnect is None:
            return
        try:
            result = self._on_reconnect()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s: reconnect hook failed", self.name)

    def _lost(self, exc: Exception) -> None:
        self.ready.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s: subscription lost, reconnecting: %s", self.name, exc)
        else:
            log.debug("%s: still reconnecting: %s", self.name, exc)
        if self._on_lost is not None:
            self._on_lost()


def _honour_cancel(task: asyncio.Task[Any] | None, cause: BaseException | None = None) -> None:
    """Raise CancelledError when this task was asked to stop, even if a library swallowed it.

    redis-py's reads run inside timeouts and retries; a cancellation that lands while one of
    them is unwinding can come back as a plain error or as "no message yet". The request is
    still recorded on the task (`cancelling()`), so the loop stops instead of listening on.
    """
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
