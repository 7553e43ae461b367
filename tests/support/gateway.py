"""Helpers for tests that talk to a worker gateway process over raw streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import redis.asyncio

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store import jobs
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc
from tests.support.processes import Spawner

PREFIX = "dispatchd"
EOF_MARK: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs predates it


@dataclass
class Gateway:
    process: ServiceProcess
    target: str
    env: dict[str, str]

    def restart(self) -> None:
        self.process.start()
        self.process.wait_healthy()


def start_gateway(spawn: Spawner, database_url: str, redis_url: str, **extra: str) -> Gateway:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_LOG_LEVEL": "INFO",
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
        **extra,
    }
    process = spawn.service("worker-gateway", env)
    return Gateway(process, process.address, process.env)


async def submit(
    pool: asyncpg.Pool,
    client: redis.asyncio.Redis,
    job_type: str,
    payload: bytes = b"",
    *,
    max_attempts: int = 3,
    initial_backoff_ms: int = 0,
    priority: int = 0,
    metadata: dict[str, str] | None = None,
) -> uuid.UUID:
    """Insert a job through the store and push its first attempt, as the control plane does."""
    new = jobs.NewJob(
        job_type=job_type,
        payload=payload,
        priority=priority,
        idempotency_key=None,
        metadata=metadata or {},
        retry=RetryPolicy(max_attempts, initial_backoff_ms, max(initial_backoff_ms, 1)),
        retry_policy_set=True,
    )
    submitted = await jobs.submit(pool, new)
    assert submitted.queued is not None
    await ReadyQueues(client, PREFIX).push([submitted.queued])
    return submitted.job.job_id


class WorkerStream:
    """A raw Connect stream; responses are buffered so tests can wait for one kind.

    One task reads the call: cancelling a pending `read()` would cancel the whole RPC,
    so waits with a timeout happen on a queue instead.
    """

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
        self.call: Any = pb_grpc.WorkerServiceStub(self.channel).Connect()  # type: ignore[call-arg]
        self.buffer: list[pb.ConnectResponse] = []
        self._incoming: asyncio.Queue[pb.ConnectResponse | BaseException] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_all())

    async def _read_all(self) -> None:
        try:
            while (message := await self.call.read()) is not EOF_MARK:
                self._incoming.put_nowait(message)
            self._incoming.put_nowait(EOFError("stream ended"))
        except Exception as exc:  # the stream failed: every later read raises this
            self._incoming.put_nowait(exc)

    async def send(self, **payload: Any) -> None:
        await self.call.write(pb.ConnectRequest(**payload))

    async def register(
        self, worker_id: str, capabilities: list[str], max_concurrency: int = 4, **labels: str
    ) -> pb.WorkerAck:
        registration = pb.WorkerRegistration(
            worker_id=worker_id, capabilities=capabilities, max_concurrency=max_concurrency, labels=labels
        )
        await self.send(registration=registration)
        first = await self.read(5)
        assert first.WhichOneof("payload") == "ack", first
        assert first.ack.kind == "registration" and first.ack.status == pb.ACK_STATUS_ACCEPTED, first
        return first.ack

    async def _next(self, timeout: float) -> pb.ConnectResponse:
        item = await asyncio.wait_for(self._incoming.get(), timeout)
        if isinstance(item, BaseException):
            self._incoming.put_nowait(item)  # every later read fails the same way
            raise item
        return item

    async def read(self, timeout: float) -> pb.ConnectResponse:
        if self.buffer:
            return self.buffer.pop(0)
        return await self._next(timeout)

    async def expect(self, kind: str, timeout: float = 5.0, ack_kind: str | None = None) -> Any:
        """The next response of this payload kind (and ack kind); others stay buffered."""
        for i, message in enumerate(self.buffer):
            if _matches(message, kind, ack_kind):
                del self.buffer[i]
                return getattr(message, kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                message = await self._next(max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise TimeoutError(f"no {kind} ({ack_kind}) within {timeout}s; buffered: {self.buffer}") from None
            if _matches(message, kind, ack_kind):
                return getattr(message, kind)
            self.buffer.append(message)

    async def assignments(self, count: int, timeout: float = 5.0) -> list[pb.TaskAssignment]:
        return [await self.expect("assignment", timeout) for _ in range(count)]

    async def nothing(self, kind: str, within: float) -> None:
        """Assert that no response of this kind arrives for `within` seconds."""
        try:
            message = await self.expect(kind, within)
        except (TimeoutError, EOFError):
            return
        raise AssertionError(f"unexpected {kind}: {message}")

    async def result(self, execution_id: str, *, success: bool = True, result: bytes = b"", error: str = "") -> Any:
        await self.send(
            result=pb.TaskResult(execution_id=execution_id, success=success, result=result, error_message=error)
        )
        return await self.expect("ack", ack_kind="result")

    async def ended(self, timeout: float = 5.0) -> grpc.StatusCode:
        """Wait for the stream to end; the final status code."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        code: grpc.StatusCode = await self.call.code()
        return code

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close(None)


def _matches(message: pb.ConnectResponse, kind: str, ack_kind: str | None) -> bool:
    if message.WhichOneof("payload") != kind:
        return False
    return ack_kind is None or message.ack.kind == ack_kind


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, interval: float = 0.05) -> None:
    """Wait until `check()` is true (state written by another process, which cannot notify us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
