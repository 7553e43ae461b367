"""What one worker stream can cost the gateway is bounded (issue 10, findings 1, 2 and 4).

A stream that floods messages and never reads its replies is pushed back on (its writes
stall) and then ended with RESOURCE_EXHAUSTED, while the gateway's memory stays under
FLOOD_RSS_BOUND_MIB and another stream keeps completing jobs; a stream that never
registers ends with DEADLINE_EXCEEDED; a malformed id is never echoed back; a client that
cancels while a write to it is blocked leaves an info line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
import redis.asyncio

from dispatchd.platform.states import WorkerStatus
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc as pb_grpc
from tests.support.factories import Spawn
from tests.support.gateway import Gateway, start_gateway
from tests.support.polling import eventually
from tests.support.streams import CHANNEL_OPTIONS, EOF_MARK, WorkerStream
from tests.support.submissions import submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REJECTED = pb.ACK_STATUS_REJECTED
STALL_SECONDS = 1.0
REGISTRATION_SECONDS = 1.0
# Growth of the gateway's resident memory allowed while one stream floods it. Before the
# fix the same flood grew it by hundreds of MiB within seconds.
FLOOD_RSS_BOUND_MIB = 128
# A malformed execution id of a few MiB: the gateway used to echo it in every ack.
HUGE_ID = "z" * (3 << 20)
# Flood for at most this long; writes are expected to stall well before.
FLOOD_SECONDS = 10.0
# A write pending this long means the gateway stopped reading the stream.
STALLED_WRITE_SECONDS = 1.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """Samples a process's resident memory in the background; `stop()` gives the peak growth."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.baseline = self.peak = rss_mib(self.pid)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.peak - self.baseline


@dataclass
class RawStream:
    """A Connect call that writes but reads only when told to (a worker that ignores its replies)."""

    channel: grpc.aio.Channel
    call: Any
    writes: int = 0
    stop: bool = False
    writer: asyncio.Task[None] | None = field(default=None)

    @classmethod
    async def registered(cls, target: str, worker_id: str, capabilities: list[str], concurrency: int = 1
                         ) -> RawStream:
        # Without BDP probing the stream's receive window stays small: replies it leaves
        # unread stop the gateway's writes after ~64 KiB instead of several MiB.
        channel = grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0)])
        call: Any = pb_grpc.WorkerServiceStub(channel).Connect()
        registration = pb.WorkerRegistration(worker_id=worker_id, capabilities=capabilities,
                                             max_concurrency=concurrency)
        await call.write(pb.ConnectRequest(registration=registration))
        return cls(channel, call)

    def flood(self, *requests: pb.ConnectRequest) -> None:
        """Write these requests round-robin, as fast as the gateway takes them, until `stop`."""

        async def write() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                while not self.stop:
                    await self.call.write(requests[self.writes % len(requests)])
                    self.writes += 1

        self.writer = asyncio.create_task(write())

    async def stalled(self) -> bool:
        """Wait (at most FLOOD_SECONDS) until a write stays pending; then stop writing."""
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:
            before = self.writes
            await asyncio.sleep(STALLED_WRITE_SECONDS)
            if self.writes == before:
                break
        self.stop = True
        return time.monotonic() < deadline

    async def final_status(self, timeout: float) -> tuple[grpc.StatusCode, str]:
        """Read everything left, then the status the stream ended with."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await self.call.read() is not EOF_MARK:
                    pass
            return await self.call.code(), await self.call.details()

    async def close(self) -> None:
        self.stop = True
        self.call.cancel()
        if self.writer is not None:
            await asyncio.gather(self.writer, return_exceptions=True)
        await self.channel.close(None)


@pytest_asyncio.fixture
async def raw_streams() -> AsyncIterator[list[RawStream]]:
    """RawStreams a test opens (append them); all closed at teardown."""
    opened: list[RawStream] = []
    yield opened
    for stream in opened:
        await stream.close()


@pytest.fixture
def limited_gateway(database_url: str, redis_url: str, spawn_service: Spawn) -> Gateway:
    return start_gateway(
        spawn_service,
        database_url,
        redis_url,
        DISPATCHD_STREAM_STALL_SECONDS=str(STALL_SECONDS),
        DISPATCHD_REGISTRATION_TIMEOUT_SECONDS=str(REGISTRATION_SECONDS),
    )


async def _offline(pool: asyncpg.Pool, worker_id: str) -> bool:
    """The gateway has ended the worker's stream and released what it held."""
    status = await pool.fetchval("SELECT status FROM workers WHERE worker_id = $1", worker_id)
    return bool(status == WorkerStatus.OFFLINE)


async def _complete_one(stream: WorkerStream, pool: asyncpg.Pool, queues: redis.asyncio.Redis, job_type: str
                        ) -> None:
    await submit(pool, queues, job_type)
    assignment = await stream.expect("assignment", 10)
    ack = await stream.result(assignment.execution_id)
    assert ack.status == pb.ACK_STATUS_ACCEPTED, ack


async def test_flooding_stream_is_ended_and_memory_stays_bounded(
    limited_gateway: Gateway,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
    raw_streams: list[RawStream],
) -> None:
    job_type = f"flood.good{uuid.uuid4().hex[:6]}"
    good = WorkerStream(limited_gateway.target)
    memory = PeakRss(limited_gateway.process.pid)
    try:
        await good.register("good-worker", [job_type])
        await _complete_one(good, db_pool, redis_client, job_type)  # warmed up: connections, caches
        memory.start()

        flooder = await RawStream.registered(limited_gateway.target, "flood-worker", ["flood.bad"])
        raw_streams.append(flooder)
        malformed = pb.ConnectRequest(result=pb.TaskResult(execution_id="not-a-uuid", success=True))
        flooder.flood(
            pb.ConnectRequest(result=pb.TaskResult(execution_id=HUGE_ID, success=True)),
            pb.ConnectRequest(heartbeat=pb.WorkerHeartbeat(worker_id="flood-worker")),
            pb.ConnectRequest(started=pb.TaskStarted(execution_id=str(uuid.uuid4()))),
            pb.ConnectRequest(),  # acknowledged without the lanes: must be pushed back on too
            *[malformed] * 20,
        )
        completed = 0

        async def keep_working() -> None:
            nonlocal completed
            while not flooder.stop:
                await _complete_one(good, db_pool, redis_client, job_type)
                completed += 1

        working = asyncio.create_task(keep_working())
        stalled = await flooder.stalled()
        await working
        print(f"flood: {flooder.writes} messages written, gateway RSS +{memory.peak - memory.baseline:.1f} MiB")
        assert stalled, f"the gateway kept reading a stream that reads nothing ({flooder.writes} writes)"

        # After the stall time the gateway ends the stream and releases its worker.
        flooder_offline = functools.partial(_offline, db_pool, "flood-worker")
        await eventually(flooder_offline, timeout=STALL_SECONDS + 10, what="the flooding stream ended")
        code, details = await flooder.final_status(timeout=10)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "stopped reading" in details

        growth = await memory.stop()
        print(f"gateway RSS grew by {growth:.1f} MiB (bound {FLOOD_RSS_BOUND_MIB}); flooder wrote "
              f"{flooder.writes} messages; the good stream completed {completed} jobs meanwhile")
        assert growth < FLOOD_RSS_BOUND_MIB, f"gateway RSS grew by {growth:.1f} MiB"
        assert completed >= 3, f"the good stream completed only {completed} jobs during the flood"
        await _complete_one(good, db_pool, redis_client, job_type)  # and it still works afterwards
    finally:
        await memory.stop()
        await good.close()


async def test_stream_that_never_registers_ends_with_deadline_exceeded(limited_gateway: Gateway) -> None:
    stream = WorkerStream(limited_gateway.target)
    try:
        started = time.monotonic()
        code = await stream.ended(timeout=REGISTRATION_SECONDS + 5)
        elapsed = time.monotonic() - started
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED, (code, await stream.details())
        assert "no registration within" in await stream.details()
        assert REGISTRATION_SECONDS - 0.1 <= elapsed < REGISTRATION_SECONDS + 2, elapsed
    finally:
        await stream.close()


async def test_cancel_during_a_blocked_write_is_logged_as_a_disconnect(
    limited_gateway: Gateway,
    db_pool: asyncpg.Pool,
    redis_client: redis.asyncio.Redis,
    raw_streams: list[RawStream],
) -> None:
    job_type = f"flood.big{uuid.uuid4().hex[:6]}"
    for _ in range(4):
        await submit(db_pool, redis_client, job_type, b"p" * (1 << 20))
    for attempt in range(4):
        # Assignments of 1 MiB that the worker does not read: the gateway's write blocks.
        stream = await RawStream.registered(limited_gateway.target, f"big-{attempt}", [job_type], concurrency=4)
        raw_streams.append(stream)

        await asyncio.sleep(0.3)
        await stream.close()
        await eventually(functools.partial(_offline, db_pool, f"big-{attempt}"), timeout=10, what="stream cleaned up")
    log = limited_gateway.process.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "ExecuteBatchError raised" not in log, log[-3000:]
    closes = [line for line in log.splitlines() if "stream.close" in line]
    assert closes and not [line for line in closes if "UNKNOWN" in line], closes


async def test_malformed_ids_are_rejected_and_never_echoed(limited_gateway: Gateway) -> None:
    stream = WorkerStream(limited_gateway.target)
    try:
        await stream.register("echo-worker", ["echo.test"])
        # uuid.UUID accepts the second: it drops every '-' and finds 32 hex digits.
        for bad in ("x" * 100_000, "-" * 100_000 + uuid.uuid4().hex):
            for payload, ack_kind, message in (
                ("result", "result", pb.TaskResult(execution_id=bad, success=True)),
                ("started", "started", pb.TaskStarted(execution_id=bad)),
                ("log_chunk", "log", pb.TaskLogChunk(execution_id=bad, message="m")),
            ):
                await stream.send(**{payload: message})
                ack = await stream.expect("ack", ack_kind=ack_kind)
                assert (ack.status, ack.execution_id, ack.message) == (REJECTED, "", "execution_id must be a UUID"), (
                    ack_kind, ack.status, len(ack.execution_id), ack.message[:80])
        await stream.send(heartbeat=pb.WorkerHeartbeat(worker_id="y" * 100_000))
        ack = await stream.expect("ack", ack_kind="heartbeat")
        assert ack.status == REJECTED and "y" not in ack.message, ack.message[:80]

        # Listing more executions than any worker may run: rejected, not a CancelExecution each.
        listed = [str(uuid.uuid4()) for _ in range(1001)]
        await stream.send(heartbeat=pb.WorkerHeartbeat(lists_running=True, running_execution_ids=listed))
        ack = await stream.expect("ack", ack_kind="heartbeat")
        assert ack.status == REJECTED and "at most 1000" in ack.message, ack.message
        await stream.nothing("cancel", within=0.5)
    finally:
        await stream.close()
