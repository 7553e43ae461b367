"""A streaming replica of a private Postgres, and the primary-side switches replication needs.

`ReplicaInstance` is a `PostgresInstance` whose data directory is not initdb'd but copied
from a running primary with `pg_basebackup -R` (run as the postgres OS user, WAL streamed
during the copy), so it starts as a hot standby streaming from that primary under
`application_name` = its region; `promote()` turns it into a writable primary.

Invariant: a replica never starts on a directory that was not a base backup of its source
(the copy is made only into an empty directory), and a promoted server never waits for a
synchronous standby it inherited (`asynchronous()` is part of promotion: the standby it
named is, after a failover, usually the server that just died).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from dispatchd.devtools.stores.postgres import PostgresInstance


class ReplicaInstance(PostgresInstance):
    def __init__(
        self,
        data_dir: Path,
        source: PostgresInstance,
        application_name: str,
        port: int | None = None,
        fast: bool = False,
    ) -> None:
        super().__init__(data_dir, port=port, fast=fast)
        self.source = source
        self.application_name = application_name

    def start(self, timeout: float = 60) -> None:
        if not self.is_running() and not (self.data_dir / "PG_VERSION").exists():
            self._prepare_dirs()
            self._base_backup()
        super().start(timeout)

    def _base_backup(self) -> None:
        conninfo = f"host=127.0.0.1 port={self.source.port} user=postgres application_name={self.application_name}"
        cmd = [
            self._tool("pg_basebackup"),
            "-d", conninfo,
            "-D", str(self.data_dir),
            "-X", "stream",  # the WAL written during the copy travels with it
            "-c", "fast",  # checkpoint now rather than waiting for the next one
            "-R",  # standby.signal + primary_conninfo (with our application_name)
            "--no-sync",
        ]  # fmt: skip
        kwargs = self._server_kwargs()
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup from port {self.source.port} failed: {done.stderr.strip()}")

    def rebuild(self) -> None:
        """Throw the data away and copy it again from `source` (a diverged old primary becomes its replica)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()

    def promote(self, timeout: int = 60) -> None:
        """End recovery: the replica becomes a writable primary (what `pg_ctl promote` does)."""
        if self.psql(f"SELECT pg_promote(true, {timeout})") != "t":
            raise RuntimeError(f"pg_promote did not finish within {timeout}s; log {self.log_path}")
        asynchronous(self)


def in_recovery(server: PostgresInstance) -> bool:
    return server.psql("SELECT pg_is_in_recovery()") == "t"


def synchronous(primary: PostgresInstance, standby: str, timeout: float = 30) -> None:
    """Commits on `primary` wait until `standby` (an application_name) has flushed them; waits until it does."""
    primary.psql(f"ALTER SYSTEM SET synchronous_standby_names = '\"{standby}\"'")
    primary.psql("SELECT pg_reload_conf()")
    wait_streaming(primary, standby, "sync", timeout)


def asynchronous(primary: PostgresInstance) -> None:
    """Commits no longer wait for any standby."""
    primary.psql("ALTER SYSTEM RESET synchronous_standby_names")
    primary.psql("SELECT pg_reload_conf()")


def wait_streaming(primary: PostgresInstance, standby: str, sync_state: str | None = None, timeout: float = 30) -> None:
    """Until `standby` streams from `primary` (with `sync_state`, e.g. "sync" or "async", when given)."""
    query = f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{standby}' AND state = 'streaming'"
    deadline = time.monotonic() + timeout
    while (state := primary.psql(query)) == "" or (sync_state is not None and state != sync_state):
        if time.monotonic() > deadline:
            wanted = sync_state or "any"
            raise RuntimeError(f"{standby} is not streaming from port {primary.port} ({wanted}): {state!r}")
        time.sleep(0.1)
