"""Fixtures for the security tests: trust material once per session, a secured stack per module.

Starting three TLS-enabled processes takes a few seconds, so the tests of one module share a
stack, a database and a Redis key prefix; tests that need their own configuration start
their own processes with `spawn_service`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatchd.devtools.stores import RedisInstance
from tests.support.databases import PgServer
from tests.support.processes import ServiceProcess
from tests.support.security import Credentials, SecureStack, make_credentials, start_secure_stack


@pytest.fixture(scope="session")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("security"))


@pytest.fixture(scope="module")
def module_database_url(pg: PgServer) -> Iterator[str]:
    name = pg.create_database()
    try:
        yield pg.url_for(name)
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def module_redis_url(redis_server: RedisInstance | None) -> str:
    import os

    if redis_server is None:
        return os.environ["DISPATCHD_TEST_REDIS_URL"]
    if not redis_server.is_running():
        redis_server.start()
    return redis_server.url


@pytest.fixture(scope="module")
def module_spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceProcess]]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    started: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        process = ServiceProcess(name, argv, env or {}, log_dir=log_dir)
        started.append(process)
        return process.start()

    yield spawn
    for process in reversed(started):
        process.__exit__(None, None, None)


@pytest.fixture(scope="module")
def secure_stack(
    creds: Credentials,
    module_database_url: str,
    module_redis_url: str,
    module_spawn: Callable[..., ServiceProcess],
) -> Iterator[SecureStack]:
    """Control plane, gateway and scheduler with APP_ENV=production: JWT auth, TLS 1.3, client certs."""
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    stack = start_secure_stack(
        module_spawn, creds, module_database_url, module_redis_url, prefix, DISPATCHD_MAX_STREAMS_PER_IDENTITY="3"
    )
    try:
        yield stack
    finally:
        stack.close()
