"""A consistent backup of a live dispatchd database: a `pg_dump -Fc` and its manifest from ONE snapshot.

Why pg_dump custom format and not a base backup + WAL: the drill must prove *content*
equality, and a logical dump taken with `--snapshot` of a snapshot we export ourselves lets
the manifest (row counts and checksums, see manifest) be computed in exactly the MVCC
snapshot the dump contains, while jobs keep flowing; a base backup is a copy of files at
no single point until WAL replay ends, so it has no snapshot to checksum against. The dump
is also portable (any Postgres >= the source's major version, any host, and in Kubernetes
just `kubectl exec pg_dump`), and `-Fc` restores in parallel. Point-in-time recovery is
what base backup + WAL would add; that is the region drill's replica (and CloudNativePG's
backups) job, not this one's.

Invariant: the dump and the manifest describe the same committed state: the exporting
transaction (REPEATABLE READ, read-only) stays open until pg_dump has finished.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dispatchd.devtools.drills import manifest
from dispatchd.devtools.drills.platform import POSTGRES, Platform
from dispatchd.devtools.stores import PostgresInstance
from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.store.guards import one_of


@dataclass(frozen=True)
class Backup:
    dump: bytes
    manifest: dict[str, manifest.Table]
    snapshot: str
    active_jobs: frozenset[str]  # not terminal in the snapshot: these must end terminal after the restore
    snapshot_jobs: frozenset[str]
    seconds: float


async def take(platform: Platform, database_url: str) -> Backup:
    """Export a snapshot, take the manifest and the job states in it, and pg_dump that same snapshot."""
    database = database_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    started = time.monotonic()
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
            dump = asyncio.create_task(
                platform.exec(POSTGRES, ["pg_dump", "-Fc", f"--snapshot={snapshot}", f"--dbname={database}"])
            )
            try:
                tables = await manifest.take(conn)
                jobs = await conn.fetch(f"SELECT job_id::text, {one_of('status', JOB_TERMINAL)} AS done FROM jobs")
            finally:
                data = await dump  # the snapshot must outlive pg_dump's use of it
    finally:
        await conn.close()
    return Backup(
        dump=data,
        manifest=tables,
        snapshot=snapshot,
        active_jobs=frozenset(row["job_id"] for row in jobs if not row["done"]),
        snapshot_jobs=frozenset(row["job_id"] for row in jobs),
        seconds=time.monotonic() - started,
    )


def restore(backup: Backup, server: PostgresInstance, directory: Path) -> float:
    """pg_restore the dump into `server`'s (empty) database; seconds taken."""
    path = directory / "backup.dump"
    path.write_bytes(backup.dump)
    started = time.monotonic()
    subprocess.run(
        [str(server.bin_dir / "pg_restore"), "--exit-on-error", "--no-owner", f"--dbname={server.url}", str(path)],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


async def manifest_of(database_url: str) -> dict[str, manifest.Table]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await manifest.take(conn)
    finally:
        await conn.close()
