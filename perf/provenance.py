"""Where and with what a perf run was measured: commit, machine, library and server versions.

Invariant: every figure is read at run time (git, os, the imported modules, the servers'
own answers), never typed; a version that cannot be read is recorded as "unknown".
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import asyncpg
import redis

from dispatchd.platform.db import asyncpg_dsn
from perf.evidence import ROOT

LIBRARIES = ("grpcio", "protobuf", "asyncpg", "redis", "uvloop", "locust")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def commit() -> dict[str, Any]:
    """HEAD and whether the work tree differs from it (evidence/ itself excluded: runs rewrite it)."""
    status = _git("status", "--porcelain", "--", ".", ":(exclude)evidence")
    return {"sha": _git("rev-parse", "HEAD"), "dirty": status not in ("", "unknown")}


def libraries() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    from google.protobuf.internal import api_implementation

    versions["protobuf_backend"] = api_implementation.Type()
    return versions


async def _postgres_version(url: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def servers(database_url: str | None, redis_url: str | None) -> dict[str, str]:
    found = {"postgres": "unknown", "redis": "unknown"}
    if database_url:
        found["postgres"] = asyncio.run(_postgres_version(database_url))
    if redis_url:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            found["redis"] = str(client.info("server")["redis_version"])
        finally:
            client.close()
    return found


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
