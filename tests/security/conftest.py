"""Fixtures for the security tests: trust material once per session, a secured stack per module.

Starting three TLS-enabled processes takes a few seconds, so the tests of one module share a
stack (dispatchd.devtools.stack), a database and a Redis key prefix; tests that need their
own configuration start their own processes with `spawn_service`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dispatchd.devtools.stores import RedisInstance
from tests.support.databases import PgServer
from tests.support.security import Credentials, SecureStack, make_credentials, secure_topology


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
def secure_stack(
    creds: Credentials,
    module_database_url: str,
    module_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecureStack]:
    """Control plane, gateway and scheduler with APP_ENV=production: JWT auth, TLS 1.3, client certs."""
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    topology = secure_topology(
        creds, module_database_url, module_redis_url, prefix, DISPATCHD_MAX_STREAMS_PER_IDENTITY="3"
    )
    with SecureStack(creds, topology, tmp_path_factory.mktemp("stack")) as stack:
        yield stack
