"""Where the Postgres and Redis server binaries are; as root, installed with apt-get when missing."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

_apt_updated = False


def is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(package: str) -> bool:
    """Install a Debian package if we are allowed to; return whether we tried."""
    global _apt_updated
    if not is_root() or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        log.info("running apt-get update")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        _apt_updated = True
    log.info("installing %s via apt-get", package)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, check=True)
    return True


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<major>/bin: sort numerically so 15 beats 9.6.
    version = Path(path).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _search_postgres_bin() -> Path | None:
    env_bin = os.environ.get("PG_BIN")
    if env_bin and (Path(env_bin) / "initdb").exists():
        return Path(env_bin)
    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if candidates:
        return Path(max(candidates, key=_version_key))
    initdb = shutil.which("initdb")
    if initdb:
        # Resolve symlinks (e.g. /usr/local/bin/initdb) so sibling tools like
        # pg_isready/psql of the same major version are found next to it.
        return Path(initdb).resolve().parent
    return None


def find_postgres_bin() -> Path:
    """Directory holding initdb/postgres; installs the `postgresql` package as root if needed."""
    found = _search_postgres_bin()
    if found is None and _apt_install("postgresql"):
        found = _search_postgres_bin()
    if found is None:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, postgres) not found: install the `postgresql` "
            "package or set PG_BIN to the directory containing them"
        )
    return found


def find_redis_server() -> str:
    """Path of `redis-server`; installs the `redis-server` package as root if needed."""
    found = shutil.which("redis-server")
    if found is None and _apt_install("redis-server"):
        found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server not found: install the `redis-server` package (or Redis >= 6) and make sure it is on PATH"
        )
    return found
