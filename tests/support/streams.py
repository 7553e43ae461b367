"""A raw worker Connect stream, for tests that play the worker by hand.

Invariant: one task reads the call and every response goes through one queue. Cancelling a
pending `read()` would cancel the whole RPC, so waits with a timeout happen on the queue;
responses of a kind nobody waits for yet stay buffered, in order. A batch the gateway sends
(assignment_batch, ack_batch) is split into its items there, each as if it had come alone;
`received` keeps what really came: each message's payload kind and how many items it held.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc

# A batch payload -> (its repeated field, the payload kind of one item).
BATCHES = {"assignment_batch": ("assignments", "assignment"), "ack_batch": ("acks", "ack")}
EOF_MARK: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs predates it
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


class WorkerStream:
    """One Connect call; plaintext, or with a client's `security` (TLS, token metadata)."""

    def __init__(self, target: str, security: ClientSecurity | None = None) -> None:
        if security is None:
            self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            metadata = None
        else:
            self.channel = security.aio_channel(target, options=CHANNEL_OPTIONS)
            metadata = security.metadata()
        self.call: Any = pb_grpc.WorkerServiceStub(self.channel).Connect(metadata=metadata)  # type: ignore[call-arg]
        self.buffer: list[pb.ConnectResponse] = []
        # (payload kind, items) of every message the gateway sent, batches unsplit.
        self.received: list[tuple[str, int]] = []
        self._incoming: asyncio.Queue[pb.ConnectResponse | BaseException] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_all())

    async def _read_all(self) -> None:
        try:
            while (message := await self.call.read()) is not EOF_MARK:
                kind = message.WhichOneof("payload")
                if kind not in BATCHES:
                    self.received.append((kind, 1))
                    self._incoming.put_nowait(message)
                    continue
                field, item_kind = BATCHES[kind]
                items = getattr(getattr(message, kind), field)
                self.received.append((kind, len(items)))
                for item in items:
                    self._incoming.put_nowait(pb.ConnectResponse(**{item_kind: item}))
            self._incoming.put_nowait(EOFError("stream ended"))
        except Exception as exc:  # the stream failed: every later read raises this
            self._incoming.put_nowait(exc)

    async def send(self, **payload: Any) -> bool:
        """False when the stream had already ended (`ended()` says how)."""
        try:
            await self.call.write(pb.ConnectRequest(**payload))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError):
            return False
        return True

    async def offer(
        self, worker_id: str, capabilities: list[str], max_concurrency: int = 4, batches: bool = False, **labels: str
    ) -> None:
        """Send a registration without waiting for the gateway's answer (`batches`: announce support)."""
        registration = pb.WorkerRegistration(
            worker_id=worker_id,
            capabilities=capabilities,
            max_concurrency=max_concurrency,
            labels=labels,
            supports_batches=batches,
        )
        await self.send(registration=registration)

    async def register(
        self, worker_id: str, capabilities: list[str], max_concurrency: int = 4, batches: bool = False, **labels: str
    ) -> pb.WorkerAck:
        """Register and assert the first response is the accepting registration ack."""
        await self.offer(worker_id, capabilities, max_concurrency, batches, **labels)
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
        """The next response; raises the RPC's error (or EOFError) when the stream ended."""
        if self.buffer:
            return self.buffer.pop(0)
        return await self._next(timeout)

    async def reply(self, timeout: float = 10) -> pb.ConnectResponse | None:
        """The next response, or None when the stream ended instead (`ended()` says how)."""
        try:
            return await self.read(timeout)
        except (grpc.aio.AioRpcError, EOFError):
            return None

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

    async def acks(self, kind: str, count: int, timeout: float = 5.0) -> dict[str, pb.WorkerAck]:
        """The next `count` acks of this kind, by execution id (batched or not)."""
        acks = [await self.expect("ack", timeout, kind) for _ in range(count)]
        return {ack.execution_id: ack for ack in acks}

    async def ended(self, timeout: float = 5.0) -> grpc.StatusCode:
        """Wait for the stream to end; the final status code."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        code: grpc.StatusCode = await self.call.code()
        return code

    async def details(self) -> str:
        """The final status message (after the stream ended)."""
        text: str = await self.call.details()
        return text or ""

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close(None)


def _matches(message: pb.ConnectResponse, kind: str, ack_kind: str | None) -> bool:
    if message.WhichOneof("payload") != kind:
        return False
    return ack_kind is None or message.ack.kind == ack_kind


def first_of(responses: Any) -> None:
    """Read one response of a server stream, then hang up (Watch, WatchJobs never end by themselves)."""
    try:
        next(responses, None)
    finally:
        responses.cancel()
