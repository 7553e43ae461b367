"""One Connect stream of a worker: register, run assignments, heartbeat, end cleanly.

A stream ends in one of three ways: it is lost (transport error, the gateway ended it,
the gateway went silent), the gateway asked the worker to drain, or the worker is
stopping. Only after a drain or a stop are in-flight handlers allowed to finish and
report; when the stream is lost their results could no longer be accepted (the gateway
re-queues those executions), so they are cancelled.

Heartbeats list the executions running here, so the gateway renews exactly those and
tells us to stop any it no longer assigns to us; a gateway that stops acknowledging them
is taken as gone. This module owns the call (one reader, one writer, the heartbeats) and
routes the gateway's messages: what runs on the stream is executions.py, how the
registration is accepted or refused is registration.py, how the stream's token is kept fresh
is renewal.py, how queued messages are packed into batches (when the registration ack
enabled them) is outbox.py. Batches from the gateway are taken item by item, as if each
item had come alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.sdk.connection import EOF, ConnectCall, connect, open_channel
from dispatchd.sdk.executions import Executions
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.registration import RegistrationRejected, await_registration
from dispatchd.sdk.registry import Registry
from dispatchd.sdk.renewal import TokenRenewal
from dispatchd.sdk.task import describe_error
from dispatchd.v1 import worker_service_pb2 as pb

log = logging.getLogger("dispatchd.sdk")

CLOSE_TIMEOUT_SECONDS = 5.0
# The gateway acks every heartbeat; this many silent intervals means it is gone.
SILENT_HEARTBEATS = 3


class Outcome(enum.Enum):
    LOST = "lost"
    DRAINED = "drained"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Config:
    target: str
    worker_id: str
    max_concurrency: int
    labels: dict[str, str]
    heartbeat_seconds: float
    security: ClientSecurity | None = None
    # Announce batched messages at registration (used once the gateway's ack agrees).
    batches: bool = True
    # Drain and reconnect after about this long (None: never), so workers spread over gateway replicas.
    max_stream_seconds: float | None = None


@dataclass
class StopRequest:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    grace: float = 30.0


class Stream:
    def __init__(self, config: Config, registry: Registry, slots: asyncio.Semaphore, stop: StopRequest) -> None:
        self.config = config
        self.registry = registry
        self.stop = stop
        self.outbox = Outbox()
        self.executions = Executions(registry, slots, self.outbox, config.worker_id)
        self.registered = asyncio.Event()
        self.drain_requested = asyncio.Event()
        self.draining = False
        self._last_heard = 0.0
        self.lost_reason = ""
        self.registered_once = False
        # The gateway said it accepts TokenRefresh on this stream (registration ack).
        self.refresh_supported = False

    async def run(self) -> Outcome:
        security = self.config.security
        token = security.bearer() if security is not None else None  # read once: the stream's own token
        channel = open_channel(self.config.target, security)
        call = connect(channel, token)
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        tasks: list[asyncio.Task[Any]] = []
        try:
            registration = pb.WorkerRegistration(
                worker_id=self.config.worker_id,
                capabilities=self.registry.capabilities,
                max_concurrency=self.config.max_concurrency,
                labels=self.config.labels,
                supports_batches=self.config.batches,
            )
            await call.write(pb.ConnectRequest(registration=registration))
            # The only reader of the call: cancelling a pending read would cancel the RPC.
            reader = asyncio.create_task(self._read(call))
            writer = asyncio.create_task(self._write(call))
            tasks += [reader, writer]
            await await_registration(self.registered, reader)
            tasks.append(asyncio.create_task(self._heartbeats(call)))
            # Only a token file can hold a fresher token; only a gateway that said so takes one.
            if security is not None and security.token_file and token and self.refresh_supported:
                tasks.append(asyncio.create_task(TokenRenewal(security, self.outbox, token).run()))
            if self.config.max_stream_seconds:
                tasks.append(asyncio.create_task(self._recycle(self.config.max_stream_seconds)))
            stop_wait = asyncio.create_task(self.stop.event.wait())
            drain_wait = asyncio.create_task(self.drain_requested.wait())
            tasks += [stop_wait, drain_wait]
            await asyncio.wait([reader, writer, stop_wait, drain_wait], return_when=asyncio.FIRST_COMPLETED)
            if reader.done() or writer.done():
                self.lost_reason = self.lost_reason or _ended_because(reader, writer)
                return Outcome.LOST
            await self._finish_inflight(reader)
            stopping = self.stop.event.is_set()
            # Results are queued; the writer sends them, then half-closes, and the gateway ends the stream.
            self.outbox.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await asyncio.wait([writer])
                    await asyncio.wait([reader])
            return Outcome.STOPPED if stopping else Outcome.DRAINED
        finally:
            self.registered.clear()
            await self.executions.abandon()
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel.close(None)

    # ----------------------------------------------------------------- phases

    async def _finish_inflight(self, reader: asyncio.Task[None]) -> None:
        """No new work; let running handlers finish, unless the stream ends first.

        A drain waits as long as the gateway keeps the stream open; a stop waits at most
        its grace period (also when the stop comes in the middle of a drain).
        """
        self.draining = True
        self.outbox.put(self._heartbeat())
        loop = asyncio.get_running_loop()
        idle = asyncio.create_task(self.executions.idle.wait())
        stop = asyncio.create_task(self.stop.event.wait())
        deadline: float | None = None
        try:
            while not idle.done() and not reader.done():
                if deadline is None and stop.done():
                    deadline = loop.time() + self.stop.grace
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                waiting = [idle, reader] if stop.done() else [idle, reader, stop]
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
        finally:
            idle.cancel()
            stop.cancel()
        if self.executions:
            log.warning("stopping with %d execution(s) still running; they will be retried", len(self.executions))
            await self.executions.abandon()

    async def _recycle(self, age: float) -> None:
        """Drain this stream after `age` (jittered down by up to 10%, so workers do not all move at once).

        A stream stays on the gateway replica it reached first; the gateway's GOAWAY
        (max_connection_age, no grace limit) only stops new calls on it. Ending it as a drain
        lets running handlers report first; the next stream's channel resolves the name again.
        """
        await asyncio.sleep(age * random.uniform(0.9, 1.0))
        log.info("stream open for %.0fs: draining it to reconnect", age)
        self.drain_requested.set()

    # ----------------------------------------------------------------- the call

    async def _read(self, call: ConnectCall) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await call.read()
            if message is EOF:
                return
            self._last_heard = loop.time()
            kind = message.WhichOneof("payload")
            if kind == "ack":
                self._on_ack(message.ack)
            elif kind == "assignment":
                self.executions.start(message.assignment)
            elif kind == "assignment_batch":
                for assignment in message.assignment_batch.assignments:
                    self.executions.start(assignment)
            elif kind == "ack_batch":
                for ack in message.ack_batch.acks:
                    self._on_ack(ack)
            elif kind == "cancel":
                self.executions.cancel(message.cancel)
            elif kind == "drain_signal":
                log.info("gateway asked to drain: %s", message.drain_signal.reason)
                self.drain_requested.set()

    async def _write(self, call: ConnectCall) -> None:
        while (message := await self.outbox.get()) is not None:
            await call.write(message)
        await call.done_writing()

    async def _heartbeats(self, call: ConnectCall) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            silent = loop.time() - self._last_heard
            if silent > SILENT_HEARTBEATS * interval + 1.0:
                self.lost_reason = f"no message from the gateway for {silent:.1f}s"
                call.cancel()
                return
            self.outbox.put(self._heartbeat())

    def _heartbeat(self) -> pb.ConnectRequest:
        if self.draining or self.stop.event.is_set():
            status = pb.WORKER_STATUS_DRAINING
        elif len(self.executions) >= self.config.max_concurrency:
            status = pb.WORKER_STATUS_BUSY
        else:
            status = pb.WORKER_STATUS_READY
        heartbeat = pb.WorkerHeartbeat(
            worker_id=self.config.worker_id,
            status=status,
            inflight_executions=len(self.executions),
            running_execution_ids=self.executions.ids(),
            lists_running=True,
        )
        return pb.ConnectRequest(heartbeat=heartbeat)

    def _on_ack(self, ack: pb.WorkerAck) -> None:
        if ack.kind == "registration":
            if ack.status != pb.ACK_STATUS_ACCEPTED:
                raise RegistrationRejected(ack.message or "registration not accepted")
            log.info("registered with the gateway: %s", ack.message)
            self.registered_once = True
            self.refresh_supported = ack.supports_token_refresh
            self.outbox.batching = self.config.batches and ack.supports_batches
            self.registered.set()
        elif ack.kind == "result":
            self.executions.on_result_ack(ack)
        elif ack.kind == "heartbeat" and ack.status == pb.ACK_STATUS_STALE:
            log.warning("heartbeat not accepted: %s", ack.message)
        elif ack.kind == "token":
            # Refused: the stream ends when its current token expires, then reconnects with the file's.
            level = logging.INFO if ack.status == pb.ACK_STATUS_ACCEPTED else logging.WARNING
            log.log(level, "token refresh: %s", ack.message)


def _ended_because(reader: asyncio.Task[None], writer: asyncio.Task[None]) -> str:
    for name, task in (("reading", reader), ("writing", writer)):
        if task.done():
            if task.cancelled():
                return f"{name} was cancelled"
            exc = task.exception()
            if isinstance(exc, grpc.aio.AioRpcError):
                return f"{exc.code().name}: {exc.details()}"
            if exc is not None:
                return describe_error(exc)
            return "the gateway ended the stream"
    return "unknown"
