"""Per-test Postgres databases cloned from a migrated template."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from dispatchd.devtools.stores import PostgresInstance

T = TypeVar("T")


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if an event loop is running here."""
    # A private thread has no running loop, so asyncio.run always works there.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def _plain_dsn(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


async def execute(url: str, *statements: str) -> None:
    """Run statements one by one (CREATE/DROP DATABASE cannot run in a transaction block)."""
    conn = await asyncpg.connect(_plain_dsn(url), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class PgServer:
    """The session's Postgres: a private instance, or an external server (instance is None)."""

    admin_url: str  # a URL whose database always exists (used for CREATE/DROP DATABASE)
    template: str
    instance: PostgresInstance | None

    @property
    def external(self) -> bool:
        return self.instance is None

    def url_for(self, database: str) -> str:
        return with_database(self.admin_url, database)

    def build_template(self) -> None:
        """(Re)create the template database and run all migrations into it."""
        from dispatchd.platform.migrate import upgrade

        run_async(
            lambda: execute(
                self.admin_url,
                f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)',
                f'CREATE DATABASE "{self.template}"',
            )
        )
        # upgrade() calls asyncio.run() (alembic env.py): keep it off any running loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(upgrade, self.url_for(self.template)).result()

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex}"
        run_async(lambda: execute(self.admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def drop_database(self, name: str) -> None:
        run_async(lambda: execute(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def template_name() -> str:
    # Parallel (xdist) workers sharing an external server each need their own template.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"dispatchd_template_{worker}" if worker else "dispatchd_template"
