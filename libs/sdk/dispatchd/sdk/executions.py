"""The executions running on one worker stream: their handlers, cancels, timeouts and results.

Invariant: every assignment started here ends in exactly one result on the outbox (success,
failure, cancelled or timed out) unless the stream is abandoned, in which case no result can
be accepted any more (the gateway re-queues those executions) and none is sent. A result
carries its assignment's claim token until the gateway acknowledges it; a result the gateway
rejects for its bytes is re-sent as a failure without them, so the execution does not hang
until its lease expires. An execution timeout cancels the handler and fails the attempt,
even when the handler swallows the cancellation. Each attempt runs inside an `Attempt`
(dispatchd.sdk.attempts): its log lines carry its ids, its handler span is current.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd.sdk import metrics
from dispatchd.sdk.attempts import Attempt, outcome_of
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.registry import Handler, Registry
from dispatchd.sdk.task import HandlerFailed, Task, TaskCancelled, describe_error, encode_result
from dispatchd.v1 import worker_service_pb2 as pb

log = logging.getLogger("dispatchd.sdk")

MAX_ERROR_CHARS = 8 * 1024


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
    # perf_counter() when the handler got its slot and started (None: it never started).
    started: float | None = None
    # The assignment's W3C trace context (empty when the job was submitted untraced).
    trace_context: dict[str, str] = field(default_factory=dict)


class Executions:
    def __init__(self, registry: Registry, slots: asyncio.Semaphore, outbox: Outbox, worker_id: str = "") -> None:
        self.registry = registry
        self.worker_id = worker_id
        self.slots = slots
        self.outbox = outbox
        self.running: dict[str, _Running] = {}
        # Set while nothing runs: a drain or a stop waits for it.
        self.idle = asyncio.Event()
        self.idle.set()
        # Results sent and not yet acknowledged: execution id -> whether they carried result bytes.
        self._unacked: dict[str, bool] = {}
        # Claim tokens of assignments whose result is not acknowledged yet.
        self._claim_tokens: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.running)

    def ids(self) -> list[str]:
        return list(self.running)

    def on_result_ack(self, ack: pb.WorkerAck) -> None:
        """The gateway answered a result: forget its token, or re-send a rejected result without its bytes."""
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

    def start(self, assignment: pb.TaskAssignment) -> None:
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
        running = _Running(task, trace_context=dict(assignment.trace_context))
        if assignment.HasField("execution_timeout"):
            timeout = assignment.execution_timeout.ToTimedelta().total_seconds()
            running.timeout = task.execution_timeout = timeout if timeout > 0 else None
        if assignment.claim_token:
            self._claim_tokens[execution_id] = assignment.claim_token
        self.running[execution_id] = running
        self.idle.clear()
        running.runner = asyncio.create_task(self._execute(running, self.registry.resolve(assignment.job_type)))

    def cancel(self, cancel: pb.CancelExecution) -> None:
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

    async def _execute(self, running: _Running, handler: Handler | None) -> None:
        task = running.task
        attempt = Attempt(task, running.trace_context, self.worker_id)
        try:
            with attempt:
                result = await self._run(running, handler)
                if running.timed_out and result.success:
                    # The handler swallowed the cancellation; past its timeout the attempt failed anyway.
                    result = pb.TaskResult(success=False, error_message=running.cancel_error)
                attempt.settle(result, outcome_of(result, running.timed_out, running.cancel_reason is not None))
            self._send_result(task.execution_id, result)
        finally:
            seconds = None if running.started is None else time.perf_counter() - running.started
            # The span's outcome; still ABANDONED when the stream went away before a result.
            metrics.for_type(task.job_type).ended(attempt.outcome, seconds)
            if running.timer is not None:
                running.timer.cancel()
            self.running.pop(task.execution_id, None)
            if not self.running:
                self.idle.set()

    async def _run(self, running: _Running, handler: Handler | None) -> pb.TaskResult:
        """The handler's outcome as a result; raises CancelledError only when the stream is going away."""
        task = running.task
        try:
            async with self.slots:
                self.outbox.put_started(task.execution_id)
                if running.timeout is not None:
                    loop = asyncio.get_running_loop()
                    running.timer = loop.call_later(running.timeout, self._time_out, running)
                running.started = time.perf_counter()
                if handler is None:
                    raise LookupError(f"this worker has no handler for job type {task.job_type!r}")
                with metrics.INFLIGHT.track_inprogress():
                    value = handler(task)
                    if inspect.isawaitable(value):
                        value = await value
            return pb.TaskResult(success=True, result=encode_result(value))
        except asyncio.CancelledError:
            if running.cancel_reason is None:
                raise  # the stream is going away: no result can be accepted any more
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return pb.TaskResult(success=False, error_message=running.cancel_error)
        except TaskCancelled:
            return pb.TaskResult(success=False, error_message=running.cancel_error)
        except HandlerFailed as exc:
            result = pb.TaskResult(success=False, error_message=exc.message[:MAX_ERROR_CHARS])
            with contextlib.suppress(TypeError):
                result.result = encode_result(exc.result)
            return result
        except Exception as exc:  # any handler error fails the attempt; the job may be retried
            log.info("handler for %s failed: %s", task.job_type, describe_error(exc))
            return pb.TaskResult(success=False, error_message=describe_error(exc)[:MAX_ERROR_CHARS])

    def _send_result(self, execution_id: str, result: pb.TaskResult) -> None:
        result.execution_id = execution_id
        result.claim_token = self._claim_tokens.get(execution_id, "")
        self._unacked[execution_id] = bool(result.result)
        self.outbox.put_result(result)

    async def _log(self, execution_id: str, message: str, stream: str) -> None:
        if execution_id not in self.running:
            return
        emitted_at = Timestamp()
        emitted_at.GetCurrentTime()
        chunk = pb.TaskLogChunk(execution_id=execution_id, message=message, stream=stream, emitted_at=emitted_at)
        await self.outbox.put_throttled(pb.ConnectRequest(log_chunk=chunk))

    async def abandon(self) -> None:
        runners = [r.runner for r in self.running.values() if r.runner is not None]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
