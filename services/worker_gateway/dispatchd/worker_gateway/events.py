"""Redis pub/sub: ready-queue notifications wake the dispatcher, cancels reach the workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from dispatchd.platform.queues import ReadyQueues
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.dispatcher import Dispatcher

log = logging.getLogger("dispatchd.gateway.events")

RECONNECT_MAX_SECONDS = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Events:
    def __init__(self, queues: ReadyQueues, dispatcher: Dispatcher, stopping: asyncio.Event) -> None:
        self.queues = queues
        self.dispatcher = dispatcher
        self.stopping = stopping
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis subscription lost: %s", exc)
            self.subscribed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _listen(self) -> None:
        keys = self.queues.keys
        pubsub = self.queues.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.ready_channel, keys.cancel_channel)
            self.subscribed.set()
            # Notifications sent while we were not listening are lost: look at the queues now.
            self.dispatcher.force_refresh()
            while not self.stopping.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                channel = _text(message["channel"])
                data = _text(message["data"])
                if channel == keys.ready_channel:
                    self.dispatcher.on_ready(data)
                elif channel == keys.cancel_channel:
                    self.on_cancel(data)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def on_cancel(self, data: str) -> None:
        try:
            body = json.loads(data)
            execution_id = uuid.UUID(str(body["execution_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed cancel message %r", data[:200])
            return
        session = self.dispatcher.find(execution_id, str(body.get("worker_id") or ""))
        if session is None:
            return
        reason = str(body.get("reason") or "cancelled")
        # The execution stays counted in flight until the worker's (stale) result or the stream end.
        session.send(pb.ConnectResponse(cancel=pb.CancelExecution(execution_id=str(execution_id), reason=reason)))
        log.info(
            "cancel sent to worker",
            extra={"fields": {"execution_id": str(execution_id), "worker_id": session.worker_id}},
        )
