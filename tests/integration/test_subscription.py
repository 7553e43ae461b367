"""platform.subscription against a real Redis: dispatch, reconnect, keepalive, clean shutdown.

A half-open connection is simulated with a TCP proxy the test controls: once frozen it keeps
both sockets open but forwards nothing, so neither side ever sees an error and only the
subscription's own keepalive can notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import redis.asyncio

from dispatchd.devtools.stores import RedisInstance
from dispatchd.platform.subscription import Subscription

# A leaked pub/sub connection must fail these tests, not just print a warning.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("error::ResourceWarning")]

CHANNEL = "test:sub:channel"
PATTERN = "test:sub:p:*"
WAIT = 10.0


class Recorder:
    """Handlers and hooks for a Subscription, each feeding a queue the test awaits."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.reconnects: asyncio.Queue[None] = asyncio.Queue()
        self.losses = 0

    def on_channel(self, data: str) -> None:
        if data == "boom":
            raise RuntimeError("handler bug")
        self.messages.put_nowait((CHANNEL, data))

    def on_pattern(self, channel: str, data: str) -> None:
        self.messages.put_nowait((channel, data))

    def on_reconnect(self) -> None:
        self.reconnects.put_nowait(None)

    def on_lost(self) -> None:
        self.losses += 1

    def subscription(self, client: redis.asyncio.Redis, **options: float) -> Subscription:
        return Subscription(
            client,
            name="test",
            channels={CHANNEL: self.on_channel},
            patterns={PATTERN: self.on_pattern},
            on_reconnect=self.on_reconnect,
            on_lost=self.on_lost,
            **options,
        )

    async def subscribed(self) -> None:
        await asyncio.wait_for(self.reconnects.get(), WAIT)

    async def next_message(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.messages.get(), WAIT)


@contextlib.asynccontextmanager
async def running(subscription: Subscription) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(subscription.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class FreezingProxy:
    """TCP proxy to Redis; `freeze()` silences the connections open now, later ones pass."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._frozen: set[int] = set()
        self._pipes: list[tuple[int, asyncio.Task[None]]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._frozen.update(conn for conn, _ in self._pipes)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for _, pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*(pipe for _, pipe in self._pipes), return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [client_writer, upstream_writer]
        conn = len(self._writers)
        for reader, writer in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            self._pipes.append((conn, asyncio.create_task(self._pump(conn, reader, writer))))

    async def _pump(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            if conn not in self._frozen:
                writer.write(chunk)
                await writer.drain()


@pytest_asyncio.fixture
async def proxy(redis_url: str) -> AsyncIterator[FreezingProxy]:
    port = urlsplit(redis_url).port
    assert port is not None
    instance = FreezingProxy(port)
    await instance.start()
    yield instance
    await instance.close()


async def test_messages_reach_their_handlers(redis_client: redis.asyncio.Redis) -> None:
    recorder = Recorder()
    async with running(recorder.subscription(redis_client)):
        await recorder.subscribed()
        await redis_client.publish(CHANNEL, "one")
        await redis_client.publish("test:sub:p:x", "two")
        await redis_client.publish("test:sub:elsewhere", "ignored")
        await redis_client.publish(CHANNEL, "boom")  # the handler raises; the subscription stays up
        await redis_client.publish(CHANNEL, "three")
        received = [await recorder.next_message() for _ in range(3)]
        assert received == [(CHANNEL, "one"), ("test:sub:p:x", "two"), (CHANNEL, "three")]
        assert recorder.messages.empty() and recorder.reconnects.empty()


async def test_a_killed_connection_is_replaced_and_reported(redis_client: redis.asyncio.Redis) -> None:
    recorder = Recorder()
    async with running(recorder.subscription(redis_client, min_backoff_seconds=0.05)) as task:
        await recorder.subscribed()
        assert await redis_client.client_kill_filter(_type="pubsub") == 1
        # Whoever reconnects (redis-py itself or the loop), the caller hears about it.
        await recorder.subscribed()
        await redis_client.publish(CHANNEL, "after")
        assert await recorder.next_message() == (CHANNEL, "after")
        assert not task.done()


async def test_a_silent_connection_is_given_up_within_the_keepalive_bound(
    proxy: FreezingProxy, redis_client: redis.asyncio.Redis
) -> None:
    keepalive = 0.5
    recorder = Recorder()
    through_proxy = redis.asyncio.Redis(port=proxy.port)
    try:
        subscription = recorder.subscription(through_proxy, keepalive_seconds=keepalive, min_backoff_seconds=0.05)
        async with running(subscription):
            await recorder.subscribed()
            proxy.freeze()
            frozen_at = asyncio.get_running_loop().time()
            await redis_client.publish(CHANNEL, "lost")  # the frozen connection never delivers it
            await recorder.subscribed()
            # Two keepalive periods of silence, then a reconnect through a fresh connection.
            assert asyncio.get_running_loop().time() - frozen_at < 2 * keepalive + 2
            assert recorder.losses == 1
            await redis_client.publish(CHANNEL, "fresh")
            assert await recorder.next_message() == (CHANNEL, "fresh")
    finally:
        await through_proxy.aclose()


async def test_a_redis_outage_is_one_warning_and_ends_in_a_catch_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = RedisInstance(tmp_path / "redis")
    instance.start()
    client = redis.asyncio.from_url(instance.url, socket_timeout=2, socket_connect_timeout=2)
    recorder = Recorder()
    caplog.set_level(logging.DEBUG, logger="dispatchd.platform.subscription")
    try:
        subscription = recorder.subscription(client, min_backoff_seconds=0.02, max_backoff_seconds=0.05)
        async with running(subscription):
            await recorder.subscribed()
            instance.stop()
            for _ in range(200):
                if recorder.losses >= 3:
                    break
                await asyncio.sleep(0.05)
            assert recorder.losses >= 3 and not subscription.subscribed
            instance.start()
            await recorder.subscribed()
            assert subscription.subscribed
            await client.publish(CHANNEL, "back")
            assert await recorder.next_message() == (CHANNEL, "back")
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        await client.aclose()
        instance.stop()


async def test_cancelling_closes_the_connection(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    client = redis.asyncio.from_url(redis_url, client_name="subscription-under-test")
    recorder = Recorder()
    try:
        subscription = recorder.subscription(client)
        async with running(subscription) as task:
            await recorder.subscribed()
            assert await _connections_named(redis_client, "subscription-under-test", 1) == 1
        assert task.cancelled() and not subscription.subscribed
        assert await _connections_named(redis_client, "subscription-under-test", 0) == 0
    finally:
        await client.aclose()
    gc.collect()  # an unclosed transport would warn (an error here) when collected


async def _connections_named(client: redis.asyncio.Redis, name: str, expected: int) -> int:
    """How many connections carry `name`, once that is `expected` or after a few seconds."""
    # The server drops a closed connection from its list on its next event-loop turn.
    count = -1
    for _ in range(100):
        count = sum(1 for c in await client.client_list() if c.get("name") == name)
        if count == expected:
            break
        await asyncio.sleep(0.05)
    return count


class _SwallowingPubSub:
    """A real pub/sub whose reads swallow a cancellation, as a library's timeout/retry code can."""

    def __init__(self, inner: redis.client.PubSub) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def get_message(self, **options: object) -> object:
        try:
            return await self._inner.get_message(**options)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            return None


async def test_a_cancellation_a_library_swallows_still_stops_it(redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url)
    real_pubsub = client.pubsub
    client.pubsub = lambda: _SwallowingPubSub(real_pubsub())  # type: ignore[assignment,method-assign,return-value]
    recorder = Recorder()
    subscription = recorder.subscription(client, keepalive_seconds=30)
    task = asyncio.create_task(subscription.run())
    try:
        await recorder.subscribed()
        task.cancel()
        # Without the check the loop would read on for another keepalive period, and again.
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done == {task} and task.cancelled()
    finally:
        if not task.done():  # the failure case: a second cancellation reaches it at some point
            task.cancel()
            await asyncio.wait({task}, timeout=35)
        await client.aclose()
