"""One Connect stream of a worker: register, run assignments, heartbeat, end cleanly.

A stream ends in one of three ways: it is lost (transport error, the gateway ended it,
the gateway went silent), the gateway asked the worker to drain, or the worker is
stopping. Only after a drain or a stop are in-flight handlers allowed to finish and
report; when the stream is lost their results could no longer be accepted (the gateway
re-queues those executions), so they are cancelled.

Heartbeats list the executions running here, so the gateway renews exactly those and
tells us to stop any it no longer assigns to us. Results carry the assignment's claim
token. An assignment with an execution timeout is cancelled when the timeout passes and
reported as failed ("execution timed out after ..."); the server fails it anyway soon
after, should this worker not manage to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd.common.security import ClientSecurity
from dispatchd.sdk.connection import EOF, ConnectCall, connect, open_channel
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.registry import Handler, Registry
from dispatchd.sdk.task import HandlerFailed, Task, TaskCancelled, describe_error, encode_result
from dispatchd.v1 import worker_service_pb2 as pb

log = logging.getLogger("dispatchd.sdk")

REGISTRATION_TIMEOUT_SECONDS = 15.0
CLOSE_TIMEOUT_SECONDS = 5.0
# The gateway acks every heartbeat; this many silent intervals means it is gone.
SILENT_HEARTBEATS = 3
MAX_ERROR_CHARS = 8 * 1024


class Outcome(enum.Enum):
    LOST = "lost"
    DRAINED = "drained"
    STOPPED = "stopped"


class RegistrationRejected(Exception):
    """The gateway refused the registration; retrying the same one cannot succeed."""


@dataclass(frozen=True)
class Config:
    target: str
    worker_id: str
    max_concurrency: int
    labels: dict[str, str]
    heartbeat_seconds: float
    security: ClientSecurity | None = None


@dataclass
class StopRequest:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    grace: float = 30.0


@dataclass(eq=False)
class _Running:
    task: Task
    runner: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    # What the failed result says when the handler is cancelled ("cancelled" or a timeout).
    cancel_error: str = "cancelled"
    timeout: float | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False


class Stream:
    def __init__(self, config: Config, registry: Registry, slots: asyncio.Semaphore, stop: StopRequest) -> None:
        self.config = config
        self.registry = registry
        self.slots = slots
        self.stop = stop
        self.outbox = Outbox()
        self.running: dict[str, _Running] = {}
        self.registered = asyncio.Event()
        self.drain_requested = asyncio.Event()
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Results sent and not yet acknowledged: execution id -> whether they carried result bytes.
        self._unacked: dict[str, bool] = {}
        # Claim tokens of assignments whose result is not acknowledged yet.
        self._claim_tokens: dict[str, str] = {}
        self._last_heard = 0.0
        self.lost_reason = ""
        self.registered_once = False

    async def run(self) -> Outcome:
        channel = open_channel(self.config.target, self.config.security)
        call = connect(channel, self.config.security)
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        tasks: list[asyncio.Task[Any]] = []
        try:
            registration = pb.WorkerRegistration(
                worker_id=self.config.worker_id,
                capabilities=self.registry.capabilities,
                max_concurrency=self.config.max_concurrency,
                labels=self.config.labels,
            )
            await call.write(pb.ConnectRequest(registration=registration))
            # The only reader of the call: cancelling a pending read would cancel the RPC.
            reader = asyncio.create_task(self._read(call))
            writer = asyncio.create_task(self._write(call))
            tasks += [reader, writer]
            await self._await_registration(reader)
            tasks.append(asyncio.create_task(self._heartbeats(call)))
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
            await self._abandon_inflight()
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel.close(None)

    # ----------------------------------------------------------------- phases

    async def _await_registration(self, reader: asyncio.Task[None]) -> None:
        registered = asyncio.create_task(self.registered.wait())
        try:
            await asyncio.wait(
                [registered, reader], timeout=REGISTRATION_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            registered.cancel()
        if self.registered.is_set():
            return
        if not reader.done():
            raise ConnectionError("the gateway did not acknowledge the registration")
        exc = reader.exception() if not reader.cancelled() else None
        if isinstance(exc, RegistrationRejected):
            raise exc
        if isinstance(exc, grpc.aio.AioRpcError):
            # PERMISSION_DENIED cannot change by retrying; UNAUTHENTICATED may (a rotated token file).
            rejected = (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED,
            )
            if exc.code() in rejected:
                raise RegistrationRejected(f"{exc.code().name}: {exc.details() or ''}")
            raise ConnectionError(f"{exc.code().name}: {exc.details()}")
        raise ConnectionError(f"the stream ended before the registration was acknowledged ({exc})")

    async def _finish_inflight(self, reader: asyncio.Task[None]) -> None:
        """No new work; let running handlers finish, unless the stream ends first.

        A drain waits as long as the gateway keeps the stream open; a stop waits at most
        its grace period (also when the stop comes in the middle of a drain).
        """
        self.draining = True
        self.outbox.put(self._heartbeat())
        loop = asyncio.get_running_loop()
        idle = asyncio.create_task(self._idle.wait())
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
        if self.running:
            log.warning("stopping with %d execution(s) still running; they will be retried", len(self.running))
            await self._abandon_inflight()

    async def _abandon_inflight(self) -> None:
        runners = [r.runner for r in self.running.values() if r.runner is not None]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

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
                self._start(message.assignment)
            elif kind == "cancel":
                self._cancel(message.cancel)
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
        elif len(self.running) >= self.config.max_concurrency:
            status = pb.WORKER_STATUS_BUSY
        else:
            status = pb.WORKER_STATUS_READY
        heartbeat = pb.WorkerHeartbeat(
            worker_id=self.config.worker_id,
            status=status,
            inflight_executions=len(self.running),
            running_execution_ids=list(self.running),
            lists_running=True,
        )
        return pb.ConnectRequest(heartbeat=heartbeat)

    # ----------------------------------------------------------------- messages from the gateway

    def _on_ack(self, ack: pb.WorkerAck) -> None:
        if ack.kind == "registration":
            if ack.status != pb.ACK_STATUS_ACCEPTED:
                raise RegistrationRejected(ack.message or "registration not accepted")
            log.info("registered with the gateway: %s", ack.message)
            self.registered_once = True
            self.registered.set()
        elif ack.kind == "result":
            carried_result = self._unacked.pop(ack.execution_id, False)
            if ack.status != pb.ACK_STATUS_REJECTED or not carried_result:
                self._claim_tokens.pop(ack.execution_id, None)
            if ack.status == pb.ACK_STATUS_REJECTED and carried_result:
                # Most likely too large: report the failure without it rather than leave the
                # execution hanging until its lease expires.
                log.warning("result of %s rejected: %s", ack.execution_id, ack.message)
                self._send_result(
                    ack.execution_id,
                    pb.TaskResult(success=False, error_message=f"result rejected by the gateway: {ack.message}"),
                )
            elif ack.status == pb.ACK_STATUS_STALE:
                log.info("result of %s was stale: %s", ack.execution_id, ack.message)
        elif ack.kind == "heartbeat" and ack.status == pb.ACK_STATUS_STALE:
            log.warning("heartbeat not accepted: %s", ack.message)

    def _start(self, assignment: pb.TaskAssignment) -> None:
        execution_id = assignment.execution_id
        if execution_id in self.running:
            log.warning("ignoring a repeated assignment of %s", execution_id)
            return
        task = Task(
            execution_id=execution_id,
            job_id=assignment.job_id,
            job_type=assignment.job_type,
            payload=assignment.payload,
            attempt=assignment.attempt,
            metadata=dict(assignment.metadata),
            lease_expires_at=assignment.lease_expires_at.ToDatetime(tzinfo=dt.UTC)
            if assignment.HasField("lease_expires_at")
            else None,
        )
        task._log_sink = functools.partial(self._log, execution_id)
        running = _Running(task)
        if assignment.HasField("execution_timeout"):
            timeout = assignment.execution_timeout.ToTimedelta().total_seconds()
            running.timeout = task.execution_timeout = timeout if timeout > 0 else None
        if assignment.claim_token:
            self._claim_tokens[execution_id] = assignment.claim_token
        self.running[execution_id] = running
        self._idle.clear()
        running.runner = asyncio.create_task(self._execute(running, self.registry.resolve(assignment.job_type)))

    def _cancel(self, cancel: pb.CancelExecution) -> None:
        running = self.running.get(cancel.execution_id)
        if running is None or running.runner is None or running.cancel_reason is not None:
            return
        log.info("execution %s cancelled by the gateway: %s", cancel.execution_id, cancel.reason)
        self._stop_handler(running, cancel.reason or "cancelled", "cancelled")

    def _time_out(self, running: _Running) -> None:
        if running.runner is None or running.runner.done() or running.cancel_reason is not None:
            return
        error = f"execution timed out after {running.timeout:g}s"
        log.info("execution %s %s; cancelling its handler", running.task.execution_id, error)
        running.timed_out = True
        self._stop_handler(running, error, error)

    def _stop_handler(self, running: _Running, reason: str, error: str) -> None:
        assert running.runner is not None
        running.cancel_reason = reason
        running.cancel_error = error
        running.task.cancelled.set()
        running.runner.cancel()

    # ----------------------------------------------------------------- running handlers

    async def _execute(self, running: _Running, handler: Handler | None) -> None:
        task = running.task
        try:
            try:
                async with self.slots:
                    self.outbox.put(pb.ConnectRequest(started=pb.TaskStarted(execution_id=task.execution_id)))
                    if running.timeout is not None:
                        loop = asyncio.get_running_loop()
                        running.timer = loop.call_later(running.timeout, self._time_out, running)
                    if handler is None:
                        raise LookupError(f"this worker has no handler for job type {task.job_type!r}")
                    value = handler(task)
                    if inspect.isawaitable(value):
                        value = await value
                result = pb.TaskResult(success=True, result=encode_result(value))
            except asyncio.CancelledError:
                if running.cancel_reason is None:
                    raise  # the stream is going away: no result can be accepted any more
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                result = pb.TaskResult(success=False, error_message=running.cancel_error)
            except TaskCancelled:
                result = pb.TaskResult(success=False, error_message=running.cancel_error)
            except HandlerFailed as exc:
                result = pb.TaskResult(success=False, error_message=exc.message[:MAX_ERROR_CHARS])
                with contextlib.suppress(TypeError):
                    result.result = encode_result(exc.result)
            except Exception as exc:  # any handler error fails the attempt; the job may be retried
                log.info("handler for %s failed: %s", task.job_type, describe_error(exc))
                result = pb.TaskResult(success=False, error_message=describe_error(exc)[:MAX_ERROR_CHARS])
            if running.timed_out and result.success:
                # The handler swallowed the cancellation; past its timeout the attempt failed anyway.
                result = pb.TaskResult(success=False, error_message=running.cancel_error)
            self._send_result(task.execution_id, result)
        finally:
            if running.timer is not None:
                running.timer.cancel()
            self.running.pop(task.execution_id, None)
            if not self.running:
                self._idle.set()

    def _send_result(self, execution_id: str, result: pb.TaskResult) -> None:
        result.execution_id = execution_id
        result.claim_token = self._claim_tokens.get(execution_id, "")
        self._unacked[execution_id] = bool(result.result)
        self.outbox.put(pb.ConnectRequest(result=result))

    async def _log(self, execution_id: str, message: str, stream: str) -> None:
        if execution_id not in self.running:
            return
        emitted_at = Timestamp()
        emitted_at.GetCurrentTime()
        chunk = pb.TaskLogChunk(execution_id=execution_id, message=message, stream=stream, emitted_at=emitted_at)
        await self.outbox.put_throttled(pb.ConnectRequest(log_chunk=chunk))


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
