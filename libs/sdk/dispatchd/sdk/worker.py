"""The public worker: register handlers, then `await worker.run()`.

    worker = Worker("gateway:50052", max_concurrency=8)

    @worker.handler("email")
    async def send_email(task: Task) -> dict:
        ...

    await worker.run()

`run()` keeps one stream to the gateway open, reconnecting with exponential backoff and
full jitter whenever it is lost, until `stop()` / `request_stop()`. `target` may list several
gateways, comma-separated: a lost connection moves the worker to the next one, so a dead
gateway costs one reconnect, not an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
from collections.abc import Callable
from typing import TypeVar

from dispatchd.common.security import ClientSecurity
from dispatchd.sdk.defaults import DEFAULT_TARGET
from dispatchd.sdk.registration import RegistrationRejected
from dispatchd.sdk.registry import Handler, Registry
from dispatchd.sdk.stream import Config, Outcome, StopRequest, Stream

log = logging.getLogger("dispatchd.sdk")

MAX_CONCURRENCY = 1000

H = TypeVar("H", bound=Handler)


class Worker:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        worker_id: str | None = None,
        max_concurrency: int = 4,
        labels: dict[str, str] | None = None,
        heartbeat_seconds: float = 5.0,
        reconnect_initial_seconds: float = 0.2,
        reconnect_max_seconds: float = 10.0,
        security: ClientSecurity | None = None,
        batches: bool = True,
        max_stream_seconds: float | None = 1800.0,
    ) -> None:
        if not 1 <= max_concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"max_concurrency must be between 1 and {MAX_CONCURRENCY}")
        if heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be positive")
        if not 0 < reconnect_initial_seconds <= reconnect_max_seconds:
            raise ValueError("reconnect backoff must satisfy 0 < initial <= max")
        self.targets = [t.strip() for t in target.split(",") if t.strip()]
        if not self.targets:
            raise ValueError("no gateway target given")
        self.target = self.targets[0]  # the gateway in use
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.max_concurrency = max_concurrency
        self.labels = dict(labels or {})
        self.heartbeat_seconds = heartbeat_seconds
        self.reconnect_initial_seconds = reconnect_initial_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        # Token and TLS files for the gateway (None: plaintext, no token).
        self.security = security
        # Ask the gateway for batched stream messages (several items per message); False:
        # one message per item, as reference clients do.
        self.batches = batches
        # Drain and reopen the stream this often (None: never), so a gateway rollout rebalances workers.
        self.max_stream_seconds = max_stream_seconds
        self.registry = Registry()
        self._stop = StopRequest()
        self._stream: Stream | None = None
        self._running = False
        self._finished = asyncio.Event()
        # Set while a stream is registered with a gateway.
        self.registered = asyncio.Event()
        self.connections = 0

    # ----------------------------------------------------------------- handlers

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator: run `job_type` (and every job type in its namespace) with this function."""

        def decorate(fn: H) -> H:
            self.register(job_type, fn)
            return fn

        return decorate

    def register(self, job_type: str, handler: Handler) -> None:
        if self._running:
            raise RuntimeError("register handlers before the worker runs")
        self.registry.register(job_type, handler)

    @property
    def capabilities(self) -> list[str]:
        return self.registry.capabilities

    @property
    def inflight(self) -> int:
        return 0 if self._stream is None else len(self._stream.executions)

    # ----------------------------------------------------------------- running

    async def run(self) -> None:
        """Serve until stopped. Raises RegistrationRejected if the gateway refuses this worker."""
        if not len(self.registry):
            raise ValueError("no handlers registered")
        if self._running:
            raise RuntimeError("the worker is already running")
        self._running = True
        self._finished.clear()
        config = Config(
            self.target,
            self.worker_id,
            self.max_concurrency,
            self.labels,
            self.heartbeat_seconds,
            self.security,
            self.batches,
            self.max_stream_seconds,
        )
        slots = asyncio.Semaphore(self.max_concurrency)
        delay = self.reconnect_initial_seconds
        try:
            while not self._stop.event.is_set():
                stream = Stream(dataclasses.replace(config, target=self.target), self.registry, slots, self._stop)
                self._stream = stream
                outcome = Outcome.LOST
                watcher = asyncio.create_task(self._mirror_registration(stream))
                try:
                    outcome = await stream.run()
                except RegistrationRejected:
                    raise
                except Exception as exc:  # connection problems: back off and try again
                    stream.lost_reason = stream.lost_reason or f"{type(exc).__name__}: {exc}"
                finally:
                    watcher.cancel()
                    self.registered.clear()
                    self._stream = None
                if self._stop.event.is_set() or outcome is Outcome.STOPPED:
                    break
                if stream.registered_once:
                    delay = self.reconnect_initial_seconds
                if outcome is Outcome.DRAINED:
                    log.info("drained; reconnecting")
                    pause = random.uniform(0, self.reconnect_initial_seconds)
                else:
                    pause = random.uniform(0, delay)  # full jitter
                    log.warning("connection to %s lost (%s); retrying in %.2fs", self.target, stream.lost_reason, pause)
                    delay = min(self.reconnect_max_seconds, delay * 2)
                    self.target = self.targets[(self.targets.index(self.target) + 1) % len(self.targets)]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stop.event.wait()
        finally:
            self._running = False
            self._finished.set()

    async def _mirror_registration(self, stream: Stream) -> None:
        await stream.registered.wait()
        self.connections += 1
        self.registered.set()

    def request_stop(self, grace: float = 30.0) -> None:
        """Stop gracefully: take no new work, give running handlers `grace` seconds, then close."""
        self._stop.grace = grace
        self._stop.event.set()

    async def stop(self, grace: float = 30.0) -> None:
        self.request_stop(grace)
        if self._running:
            await self._finished.wait()
