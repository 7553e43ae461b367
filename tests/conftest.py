"""Shared fixtures: private Postgres/Redis servers, per-test databases, service processes.

One Postgres and one Redis server are started per session. Every test that asks for
`database_url` gets a fresh database cloned from a template that was migrated once, so
tests never see each other's rows. Set DISPATCHD_TEST_DATABASE_URL / DISPATCHD_TEST_REDIS_URL
to use external servers instead (tests that stop or restart a server are then skipped).
"""

from __future__ import annotations

import os

# Some tests restart Postgres from this process (fork+exec); gRPC's fork handlers crash such
# children when enabled, and nothing here needs gRPC across a fork. Must precede importing grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import atexit
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import hypothesis
import hypothesis.configuration
import pytest
import pytest_asyncio
import redis
import redis.asyncio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # make `tests.support` importable however pytest is launched
    sys.path.insert(0, str(ROOT))

from dispatchd.devtools.stores import PostgresInstance, RedisInstance  # noqa: E402
from dispatchd.platform.db import create_pool  # noqa: E402
from tests.support.databases import PgServer, template_name  # noqa: E402
from tests.support.processes import Spawner  # noqa: E402

# Safety net: fixture finalizers stop the servers, but if pytest dies halfway (e.g. an
# exception in session teardown) these are killed at interpreter exit regardless.
_live_servers: list[PostgresInstance | RedisInstance] = []


@atexit.register
def _kill_leftover_servers() -> None:
    for server in _live_servers:
        server.kill()


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _keep_hypothesis_out_of_the_tree() -> None:
    # Hypothesis writes its example database and caches under ./.hypothesis by default, which
    # is the repository root; the suite must leave the tree as it found it. Nothing here relies
    # on replaying saved failures (a failing example is printed), so no database at all.
    home = Path(tempfile.gettempdir()) / f"dispatchd-hypothesis-{os.getuid()}"
    hypothesis.configuration.set_hypothesis_home_dir(home)
    hypothesis.settings.register_profile("dispatchd", database=None)
    hypothesis.settings.load_profile("dispatchd")


def pytest_configure(config: pytest.Config) -> None:
    _keep_hypothesis_out_of_the_tree()
    # A cancelled CI job sends SIGTERM, which would kill pytest without running fixture
    # finalizers (or atexit) and leak the servers; treat it like Ctrl-C instead.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    for marker in (
        "integration: talks to real Postgres/Redis started by the test harness",
        "e2e: runs the services as separate processes",
        "chaos: kills processes at random (make chaos)",
    ):
        config.addinivalue_line("markers", marker)


# --------------------------------------------------------------------------- postgres


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """The session's Postgres server with the migrated template database in place."""
    external = os.environ.get("DISPATCHD_TEST_DATABASE_URL")
    instance: PostgresInstance | None = None
    if external:
        server = PgServer(admin_url=external, template=template_name(), instance=None)
    else:
        instance = PostgresInstance(tmp_path_factory.mktemp("postgres") / "data", fast=True)
        _live_servers.append(instance)
        server = PgServer(admin_url=instance.url_for("postgres"), template=template_name(), instance=instance)
    try:
        if instance is not None:
            instance.start()
        server.build_template()
        yield server
    finally:
        if instance is not None:
            instance.destroy()
            _live_servers.remove(instance)


@pytest.fixture
def pg_instance(pg: PgServer) -> Iterator[PostgresInstance]:
    """The private Postgres process itself, for tests that kill/stop/restart it.

    Skipped with an external database. Whatever the test did, the server runs again afterwards.
    """
    if pg.instance is None:
        pytest.skip("uses an external database (DISPATCHD_TEST_DATABASE_URL); cannot control its server")
    yield pg.instance
    if not pg.instance.is_running():
        pg.instance.start()


@pytest.fixture
def database_url(pg: PgServer) -> Iterator[str]:
    """URL of a fresh, fully migrated database private to this test."""
    name = pg.create_database()
    try:
        yield pg.url_for(name)
    finally:
        if pg.instance is not None and not pg.instance.is_running():
            pg.instance.start()  # a test crashed the server and did not bring it back
        pg.drop_database(name)


@pytest_asyncio.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:  # a test leaked an acquired connection; do not hang teardown
            pool.terminate()


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisInstance | None]:
    """The session's private Redis, or None with DISPATCHD_TEST_REDIS_URL set."""
    if os.environ.get("DISPATCHD_TEST_REDIS_URL"):
        yield None
        return
    instance = RedisInstance(tmp_path_factory.mktemp("redis"))
    _live_servers.append(instance)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        _live_servers.remove(instance)


@pytest.fixture
def redis_instance(redis_server: RedisInstance | None) -> Iterator[RedisInstance]:
    """The private Redis process, for tests that kill/restart it (running again afterwards)."""
    if redis_server is None:
        pytest.skip("uses an external Redis (DISPATCHD_TEST_REDIS_URL); cannot control its server")
    yield redis_server
    if not redis_server.is_running():
        redis_server.start()


@pytest.fixture
def redis_url(redis_server: RedisInstance | None) -> str:
    """URL of the session's Redis, emptied (FLUSHALL) before the test."""
    if redis_server is None:
        url = os.environ["DISPATCHD_TEST_REDIS_URL"]
    else:
        if not redis_server.is_running():
            redis_server.start()
        url = redis_server.url
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()
    return url


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- processes


@pytest.fixture
def spawn_service(tmp_path: Path) -> Iterator[Spawner]:
    """`spawn_service(name, argv, env=None)` or `spawn_service.service(kind, env)` -> a started process.

    Logs land in the test's tmp_path; every process still alive at teardown is stopped.
    """
    spawner = Spawner(tmp_path / "logs")
    yield spawner
    spawner.stop_all()
