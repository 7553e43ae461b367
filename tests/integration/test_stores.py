"""The test harness itself: private Postgres/Redis servers and per-test databases."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest
import redis.asyncio

from dispatchd.devtools.stack import ServiceFailed, ServiceProcess, python_module_argv
from dispatchd.devtools.stores import (
    PostgresInstance,
    RedisInstance,
    free_port,
    reachable_postgres,
    reachable_redis,
)
from tests.support.databases import PgServer

pytestmark = pytest.mark.integration


async def test_database_is_reachable_and_migrated(database_url: str) -> None:
    assert await reachable_postgres(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert {"jobs", "executions", "workers"} <= tables


async def test_template_holds_the_schema(pg: PgServer) -> None:
    conn = await asyncpg.connect(pg.url_for(pg.template))
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1)",
            ["jobs", "executions", "workers"],
        )
    finally:
        await conn.close()
    assert count == 3


async def test_each_test_gets_its_own_database(pg: PgServer, db_pool: asyncpg.Pool, database_url: str) -> None:
    name = await db_pool.fetchval("SELECT current_database()")
    assert name.startswith("test_") and database_url.endswith("/" + name)
    assert await db_pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_redis_ping_and_flush_between_tests(redis_client: redis.asyncio.Redis, redis_url: str) -> None:
    assert await reachable_redis(redis_url)
    assert await redis_client.ping()
    assert await redis_client.dbsize() == 0  # FLUSHALL ran before this test
    await redis_client.set("leftover", "1")  # the next test must not see this


async def test_redis_is_flushed_again(redis_client: redis.asyncio.Redis) -> None:
    assert await redis_client.get("leftover") is None


def test_postgres_kill_and_restart_keeps_committed_data(pg_instance: PostgresInstance, database_url: str) -> None:
    db = database_url.rsplit("/", 1)[1]
    pg_instance.psql("CREATE TABLE survivor (v text); INSERT INTO survivor VALUES ('still here')", db)
    pg_instance.kill()
    assert not pg_instance.is_running()
    assert not asyncio.run(reachable_postgres(database_url, timeout=0.5))
    pg_instance.start()  # crash recovery from the stale postmaster.pid and WAL
    assert pg_instance.psql("SELECT v FROM survivor", db) == "still here"


def test_postgres_graceful_restart_keeps_the_port(pg_instance: PostgresInstance, database_url: str) -> None:
    port = pg_instance.port
    pg_instance.restart()
    assert pg_instance.port == port and pg_instance.is_running()
    assert asyncio.run(reachable_postgres(database_url))


def test_redis_restart_comes_back_empty(redis_instance: RedisInstance, redis_url: str) -> None:
    async def write() -> None:
        client = redis.asyncio.from_url(redis_url)
        await client.set("k", "v")
        await client.aclose()

    async def size() -> int:
        client = redis.asyncio.from_url(redis_url)
        try:
            return int(await client.dbsize())
        finally:
            await client.aclose()

    asyncio.run(write())
    redis_instance.kill()
    assert not asyncio.run(reachable_redis(redis_url, timeout=0.5))
    redis_instance.restart()
    assert asyncio.run(size()) == 0


def test_private_instances_reuse_their_data_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("reuse")
    first = PostgresInstance(base / "pg", fast=True)
    try:
        first.start()
        first.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)", "dispatchd")
        with pytest.raises(RuntimeError, match="already in use"):
            PostgresInstance(base / "pg", fast=True).start()  # must not clobber a live server
        first.stop()
        assert not first.is_running()
        second = PostgresInstance(base / "pg", fast=True)  # like a second `make up`
        try:
            second.start()
            assert second.port != 0 and second.psql("SELECT x FROM kept", "dispatchd") == "7"
        finally:
            second.destroy()
    finally:
        first.kill()

    persistent = RedisInstance(base / "redis", persist=True)
    try:
        persistent.start()
        asyncio.run(_redis_set(persistent.url))
        persistent.restart()  # SIGTERM flushes the AOF
        assert asyncio.run(_redis_get(persistent.url)) == b"v"
    finally:
        persistent.stop()


async def _redis_set(url: str) -> None:
    client = redis.asyncio.from_url(url)
    await client.set("k", "v")
    await client.aclose()


async def _redis_get(url: str) -> bytes | None:
    client = redis.asyncio.from_url(url)
    try:
        value = await client.get("k")
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        await client.aclose()


def test_service_process_health_wait_and_failure_output(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    server_code = (
        "import asyncio, grpc\n"
        "from grpc_health.v1 import health, health_pb2_grpc\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)\n"
        f"    server.add_insecure_port('127.0.0.1:{port}')\n"
        "    await server.start()\n"
        "    print('serving', flush=True)\n"
        "    await server.wait_for_termination()\n"
        "asyncio.run(main())\n"
    )
    logs = tmp_path_factory.mktemp("svc")
    with ServiceProcess("health", [sys.executable, "-c", server_code], {}, log_dir=logs) as service:
        service.wait_healthy(f"127.0.0.1:{port}", timeout=20)
        assert "serving" in service.log_tail()
        service.terminate()
        assert not service.is_running()

    broken = ServiceProcess("broken", [*python_module_argv("dispatchd.no_such_module")], {}, log_dir=logs).start()
    with pytest.raises(ServiceFailed, match="No module named"):
        broken.wait_healthy(f"127.0.0.1:{free_port()}", timeout=10)
    assert broken.wait(5) != 0

