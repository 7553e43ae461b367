"""A private, throwaway PostgreSQL cluster: initdb on first use, then start/stop/kill/restart.

Invariant: the server listens on 127.0.0.1 only, keeps all state under its data dir (so
several instances coexist and `make up` restarts with the data it persisted last time),
and runs in its own session; as root it runs as the `postgres` OS user (see placement).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dispatchd.devtools.stores.discovery import find_postgres_bin, is_root
from dispatchd.devtools.stores.placement import chown_tree, data_dir_for, socket_dir_for
from dispatchd.devtools.stores.server import Server, tail

log = logging.getLogger(__name__)


class PostgresInstance(Server):
    """A private PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`.

    `fast=True` turns off fsync/full_page_writes (safe against killing postgres, not
    against an OS crash); `async_commit=True` additionally sets synchronous_commit=off,
    which can lose the last commits even on kill(), so it is opt-in.

    As root the server runs as the `postgres` OS user (postgres refuses to run as root);
    `data_dir` may then be relocated under the temp dir if its parents are not
    traversable by that user (see `relocated`).
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # postgres' "fast" shutdown
    database = "dispatchd"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast: bool = False,
        async_commit: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(port)
        self.async_commit = async_commit
        self.settings = dict(settings or {})  # more server settings (`-c name=value`), e.g. a preloaded extension
        self.requested_data_dir = Path(data_dir).absolute()
        self.data_dir = self.requested_data_dir
        self.fast = fast
        self.bin_dir = find_postgres_bin()
        self._user: pwd.struct_passwd | None = None
        if is_root():
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root but there is no `postgres` OS user to run the server as") from None
            self.data_dir = data_dir_for(self.requested_data_dir, self._user)
        self.socket_dir = socket_dir_for(self.data_dir)

    # -- properties

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self._port}/{self.database}"

    def url_for(self, database: str) -> str:
        """URL of another database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self._port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        # postgres insists on 0700/0750 for its data directory.
        self.data_dir.chmod(0o700)
        self.socket_dir.chmod(0o700)
        if self._user is not None:
            chown_tree(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            chown_tree(self.socket_dir, self._user.pw_uid, self._user.pw_gid)

    # -- process helpers

    def _server_kwargs(self) -> dict[str, Any]:
        """Popen kwargs dropping root privileges to the postgres user when needed."""
        # Popen(user=...) does setgid/setuid in the child right before exec; unlike
        # `runuser` there is no intermediate process, so Popen.pid *is* the postmaster
        # and signals reach it directly.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env.get("LC_ALL") or "C.UTF-8"
        kwargs: dict[str, Any] = {"env": env, "cwd": str(self.data_dir.parent)}
        if self._user is not None:
            env["HOME"] = self._user.pw_dir
            env["USER"] = env["LOGNAME"] = self._user.pw_name
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    def _client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "3"
        return env

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if path.exists():
            return str(path)
        found = shutil.which(name)
        if found is None:
            raise RuntimeError(f"{name} not found in {self.bin_dir} or on PATH")
        return found

    def _initdb(self) -> None:
        log.info("initialising postgres cluster in %s", self.data_dir)
        cmd = [
            self._tool("initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "-E", "UTF8",
            "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **self._server_kwargs()
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout.decode(errors='replace')}")

    def _accepting(self) -> bool:
        cmd = [
            self._tool("pg_isready"),
            "-q",
            "-h", "127.0.0.1",
            "-p", str(self._port),
            "-U", "postgres",
            "-d", "postgres",
            "-t", "1",
        ]  # fmt: skip
        result = subprocess.run(
            cmd,
            check=False,
            env=self._client_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with psql as the postgres superuser; return its unaligned output."""
        cmd = [
            self._tool("psql"),
            "-X", "-q", "-tA",
            "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1",
            "-p", str(self._port),
            "-U", "postgres",
            "-d", database,
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(
            cmd,
            check=False,
            env=self._client_env(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed for {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def _live_owner(self) -> int | None:
        """Pid of a *running* postgres that owns data_dir, per its postmaster.pid."""
        # A stale postmaster.pid (after kill() or a container restart) is left alone:
        # postgres itself sees the recorded pid is gone and replaces the file. We only
        # look for a live one to give a clear error instead of postgres' lock failure;
        # the /proc name check avoids mistaking a recycled pid for the old postmaster.
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            return None
        if pid == (self._proc.pid if self._proc else None) or comm not in ("postgres", "postmaster"):
            return None
        return pid

    # -- lifecycle

    def start(self, timeout: float = 30) -> None:
        """Initialise the cluster if needed, start it and create database `dispatchd`."""
        if self.is_running():
            return
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        other = self._live_owner()
        if other is not None:
            raise RuntimeError(
                f"postgres data dir {self.data_dir} is already in use by running postgres pid {other} "
                "(an earlier `make up`?); stop that server first"
            )
        cmd = [
            self._tool("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self._port),
            "-c", "listen_addresses=127.0.0.1",
            "-k", str(self.socket_dir),
            "-c", "max_connections=200",
        ]  # fmt: skip
        if self.fast:
            # Skip disk flushes: throwaway data need not survive an OS crash, and this
            # makes DDL and CREATE DATABASE ... TEMPLATE several times faster. Both
            # settings stay crash-safe for a killed *postgres* (the OS keeps the
            # written pages), which chaos tests rely on.
            cmd += ["-c", "fsync=off", "-c", "full_page_writes=off"]
            if self.async_commit:
                # Not crash-safe even for kill(): the last ~0.6 s of commits can vanish.
                cmd += ["-c", "synchronous_commit=off"]
        for name, setting in self.settings.items():
            cmd += ["-c", f"{name}={setting}"]
        self._spawn(cmd, self.log_path, **self._server_kwargs())
        try:
            self._wait_ready(timeout)
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
                self.psql(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._proc.returncode} during startup; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            if self._accepting():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections on port {self._port} within "
                    f"{timeout:.0f}s; log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    @property
    def relocated(self) -> bool:
        """Whether the data dir was moved under the temp dir (see class docstring)."""
        return self.data_dir != self.requested_data_dir

    def destroy(self) -> None:
        """Stop the server and delete its data, socket dir and log."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
        if self.relocated:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
