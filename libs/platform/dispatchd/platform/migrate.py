"""`dispatchd-migrate`: bring the database schema to the newest Alembic revision."""

from __future__ import annotations

import argparse
import asyncio
import pathlib

from alembic import command
from alembic.config import Config

from dispatchd.platform import startup
from dispatchd.platform.config import get_settings

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Apply dispatchd database migrations.")
    parser.add_argument("--database-url", default=None, help="defaults to DATABASE_URL")
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    url = args.database_url or get_settings().database_url
    try:
        # Asked first so an unreachable database is one line, not Alembic's traceback.
        asyncio.run(startup.check_postgres(url))
    except startup.StoreUnreachable as exc:
        raise SystemExit(f"dispatchd-migrate: {exc}") from None
    upgrade(url, args.revision)


if __name__ == "__main__":
    main()
