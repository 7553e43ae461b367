"""Fixtures shared by the integration tests: a gateway process, raw streams, SDK workers, schedulers.

Invariant: whatever a fixture starts is stopped at teardown before the test's database is
dropped (process fixtures depend on `spawn_service`, which is torn down first), so a test
never needs its own cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.sdk import Worker
from tests.support.factories import GatewayWith, Spawn, StartControlPlane, StartScheduler, Streams, Workers
from tests.support.gateway import Gateway, start_gateway
from tests.support.streams import WorkerStream


@pytest.fixture
def gateway_env() -> dict[str, str]:
    """Extra environment of the `gateway` process; a module overrides it to tune the gateway."""
    return {}


@pytest.fixture
def gateway_with(database_url: str, redis_url: str, spawn_service: Spawn) -> GatewayWith:
    """`gateway_with(**env)`: a gateway process of the test's own, with this extra environment."""

    def start(**env: str) -> Gateway:
        # spawn_service last: the gateway is stopped before the database is dropped.
        return start_gateway(spawn_service, database_url, redis_url, **env)

    return start


@pytest.fixture
def gateway(gateway_with: GatewayWith, gateway_env: dict[str, str]) -> Gateway:
    return gateway_with(**gateway_env)


@pytest_asyncio.fixture
async def streams(request: pytest.FixtureRequest) -> AsyncIterator[Streams]:
    """Factory `streams(target=None)` of raw worker streams, all closed at teardown.

    Without a target a stream goes to the `gateway` fixture, started on first use (a test
    that starts its own gateways does not also start that one).
    """
    opened: list[WorkerStream] = []

    def open_stream(target: str | None = None) -> WorkerStream:
        stream = WorkerStream(target or request.getfixturevalue("gateway").target)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        await stream.close()


@pytest_asyncio.fixture
async def workers(gateway: Gateway) -> AsyncIterator[Workers]:
    """Factory `workers(register, **options)`: an SDK Worker on `gateway`, run in this process.

    `register(worker)` registers its handlers; every worker is stopped at teardown.
    """
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(register: Callable[[Worker], None], **options: object) -> Worker:
        options.setdefault("heartbeat_seconds", 1.0)
        worker = Worker(gateway.target, **options)  # type: ignore[arg-type]
        register(worker)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in running:
        worker.request_stop(grace=1.0)
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


def _service_env(database_url: str, redis_url: str, settings: dict[str, str]) -> dict[str, str]:
    """A service's environment: the test's stores, a short shutdown grace, DISPATCHD_<X> settings."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
        **{f"DISPATCHD_{key.upper()}": value for key, value in settings.items()},
    }


@pytest.fixture
def start_scheduler(database_url: str, redis_url: str, spawn_service: Spawn) -> StartScheduler:
    """`start_scheduler(name, wait=True, **settings)`: a scheduler process, healthy unless `wait=False`.

    Each setting `x="v"` becomes DISPATCHD_X=v in its environment.
    """

    def start(name: str = "scheduler", *, wait: bool = True, **settings: str) -> ServiceProcess:
        env = _service_env(database_url, redis_url, settings)
        return spawn_service.service("scheduler", env, name=name, wait=wait)

    return start


@pytest.fixture
def start_control_plane(database_url: str, redis_url: str, spawn_service: Spawn) -> StartControlPlane:
    """`start_control_plane(target)`: a healthy control plane listening on `target`."""

    def start(target: str) -> ServiceProcess:
        return spawn_service.service("control-plane", _service_env(database_url, redis_url, {}), listen=target)

    return start
