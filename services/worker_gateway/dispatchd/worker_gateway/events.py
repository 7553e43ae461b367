"""Redis pub/sub: ready-queue notifications wake the dispatcher, cancels reach the workers.

Both arrive on one keepalive-checked subscription (platform.subscription) and are handled
inline, so a "work for type T" notification wakes the dispatcher as soon as it is read.
Notifications sent while unsubscribed are lost: every (re)subscription makes the
dispatcher re-read the known job types and look at the queues.
"""

from __future__ import annotations

import json
import logging
import uuid

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.subscription import Subscription
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.dispatcher import Dispatcher

log = logging.getLogger("dispatchd.gateway.events")


class Events:
    def __init__(self, queues: ReadyQueues, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        keys = queues.keys
        self.subscription = Subscription(
            queues.client,
            name="gateway events",
            channels={keys.ready_channel: dispatcher.on_ready, keys.cancel_channel: self.on_cancel},
            on_reconnect=dispatcher.force_refresh,
        )

    async def run(self) -> None:
        """Keep the subscription alive until cancelled."""
        await self.subscription.run()

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
