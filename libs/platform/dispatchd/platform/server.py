"""Process scaffolding shared by the three services.

Each service builds its servicers on a `Runtime` (settings, Postgres pool, Redis client)
and hands them to `serve`, which adds gRPC health that follows Postgres and Redis
reachability, limits connection age and client pings (connections.py), runs background
tasks, and shuts down gracefully on SIGTERM/SIGINT:
health flips to NOT_SERVING first, then the server stops with a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dispatchd.common import loops
from dispatchd.common.metrics import MetricsListenError, serve_metrics
from dispatchd.common.observability import configure_logging, stop_logging
from dispatchd.common.tracing import configure_tracing, stop_tracing
from dispatchd.platform import disconnects, metrics, startup
from dispatchd.platform.config import Settings
from dispatchd.platform.connections import server_options
from dispatchd.platform.health import HealthServicer
from dispatchd.platform.interceptors import ErrorInterceptor
from dispatchd.platform.primacy import RegionFence
from dispatchd.platform.regions import PassiveRegionInterceptor, Region, RegionConfigError
from dispatchd.platform.rpc_metrics import MetricsInterceptor
from dispatchd.platform.security.serving import ServerSecurity, start_health_server
from dispatchd.platform.security.settings import SecurityConfigError
from dispatchd.platform.traces import TraceInterceptor

log = logging.getLogger("dispatchd.server")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Request headers (a JWT plus the usual gRPC ones); larger ones are refused by gRPC itself.
MAX_METADATA_BYTES = 16 * 1024


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    fence: RegionFence  # may this process change work now (its database decides, see primacy)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass
class Service:
    """What a service contributes: servicer registrations, background tasks, names for health."""

    register: Callable[[grpc.aio.Server], None]
    service_names: list[str]
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


async def open_runtime(settings: Settings, region: Region) -> Runtime:
    """Raises StoreUnreachable (see startup) when Postgres or Redis does not answer."""
    pool = await startup.open_postgres(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    try:
        client = await startup.open_redis(settings.redis_url)
    except startup.StoreUnreachable:
        await pool.close()
        raise
    fence = RegionFence(region, pool)
    try:
        # Decided before the first call is served; a failure leaves it closed until the refresher succeeds.
        await fence.refresh()
    except Exception as exc:
        log.warning("cannot read the region primacy yet: %s", exc)
    return Runtime(settings=settings, pool=pool, redis=client, fence=fence)


async def _open_or_exit(name: str, settings: Settings, region: Region) -> Runtime:
    """The runtime, or exit with the one line saying which store is unreachable (no traceback)."""
    try:
        return await open_runtime(settings, region)
    except startup.StoreUnreachable as exc:
        raise SystemExit(f"{name}: {exc}") from None


async def _stores_reachable(runtime: Runtime) -> bool:
    try:
        async with asyncio.timeout(2):
            await runtime.pool.fetchval("SELECT 1")
            await runtime.redis.ping()
        return True
    except Exception as exc:  # any failure means not serving; say why once per change
        log.warning("health check failed: %s", exc)
        return False


async def _watch_health(runtime: Runtime, servicer: HealthServicer, names: list[str]) -> None:
    serving = None
    while not runtime.stopping.is_set():
        ok = await _stores_reachable(runtime)
        if ok != serving:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ["", *names]:
                await servicer.set(name, status)
            serving = ok
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stopping.wait(), timeout=2.0 if ok else 0.5)


async def serve(
    name: str,
    settings: Settings,
    listen: str,
    build: Callable[[Runtime], Awaitable[Service]],
) -> None:
    configure_logging(name, settings.log_level, settings.log_json)
    disconnects.install()
    # Off (and out of the interceptor chain) unless an OTLP endpoint is configured.
    traced = configure_tracing(name)
    try:
        region = Region.from_settings(settings)
    except RegionConfigError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    try:
        # Before touching any store: an unsafe or broken configuration fails fast and says why.
        security = ServerSecurity.from_settings(settings)
    except SecurityConfigError as exc:
        log.error("%s: %s", name, exc)
        raise SystemExit(f"{name}: {exc}") from None
    metrics.bind_service(name)
    try:
        exposition = serve_metrics(settings.metrics_listen, name)
    except (MetricsListenError, OSError) as exc:
        raise SystemExit(f"{name}: cannot serve metrics on {settings.metrics_listen!r}: {exc}") from None
    runtime = await _open_or_exit(name, settings, region)
    service = await build(runtime)
    server = grpc.aio.server(
        # Metrics outermost, so refused calls count too; then security: nothing else runs for a
        # caller it refuses. Tracing outside the error mapping, so a span sees the status the
        # caller gets.
        interceptors=[
            MetricsInterceptor(name),
            security.interceptor,
            *([TraceInterceptor()] if traced else []),
            ErrorInterceptor(read_only=runtime.fence.read_only),
            PassiveRegionInterceptor(runtime.fence),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            *server_options(settings),
        ],
    )
    service.register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection_enabled:
        reflection.enable_server_reflection([*service.service_names, health.SERVICE_NAME], server)
    port = security.add_port(server, listen)
    if port == 0:
        raise SystemExit(f"{name}: cannot listen on {listen}")
    await server.start()
    probes = await start_health_server(settings.health_listen, health_servicer)
    log.info(
        "%s listening on %s",
        name,
        listen,
        extra={
            "fields": {"service": name, "listen": listen, "health_listen": settings.health_listen or None}
            | {"security": security.summary(), "tracing": traced}
            | loops.runtime()
        },
    )

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopping.set)

    background = [
        asyncio.create_task(_watch_health(runtime, health_servicer, service.service_names)),
        asyncio.create_task(runtime.fence.run(runtime.stopping)),
    ]
    background += [asyncio.create_task(task()) for task in service.tasks]
    stop_wait = asyncio.create_task(runtime.stopping.wait())
    await asyncio.wait([stop_wait, *background], return_when=asyncio.FIRST_COMPLETED)
    for task in background:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
    runtime.stopping.set()
    log.info("%s shutting down", name)
    await health_servicer.enter_graceful_shutdown()
    for hook in runtime.on_shutdown:
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    await server.stop(settings.shutdown_grace_seconds)
    if probes is not None:
        await probes.stop(None)
    if exposition is not None:
        exposition.stop()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await runtime.redis.aclose()
    await runtime.pool.close()
    log.info("%s stopped", name)


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop; then export the last spans and log lines."""
    try:
        loops.run(coro)
    finally:
        stop_tracing()
        stop_logging()
