"""Private, throwaway Postgres and Redis servers for local development and tests.

Both servers run as child processes of the caller in their own session (process group),
listen on 127.0.0.1 only and keep all state under a caller-chosen directory, so several
instances (e.g. parallel test runs) can coexist and `make up` can restart with the data
it persisted last time.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

log = logging.getLogger(__name__)

__all__ = [
    "PostgresInstance",
    "RedisInstance",
    "find_postgres_bin",
    "find_redis_server",
    "free_port",
    "reachable_postgres",
    "reachable_redis",
]

# Unix socket paths are limited to 107 bytes (sun_path); postgres appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN = 80
_apt_updated = False


# --------------------------------------------------------------------------- discovery


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(package: str) -> bool:
    """Install a Debian package if we are allowed to; return whether we tried."""
    global _apt_updated
    if not _is_root() or shutil.which("apt-get") is None:
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- helpers


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The server runs in its own session (pgid == pid), so this also reaches its
    # children (postgres backends) without touching anything else. Only while the
    # leader is unreaped: until then its pid (= the pgid) cannot be reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float, name: str) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; sending SIGKILL", name, timeout)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


class _Server:
    """Common child-process bookkeeping for the two server kinds."""

    name = "server"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, simulating a crash."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)
            self._proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _open_log(self, path: Path) -> Any:
        self._close_log()
        self._log_handle = open(path, "ab")  # noqa: SIM115 - lives as long as the child
        return self._log_handle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- postgres


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may search (x) directory `path` according to its mode bits."""
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    groups = {user.pw_gid, *(g for g in os.getgrouplist(user.pw_name, user.pw_gid))}
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(name, uid, gid)


class PostgresInstance(_Server):
    """A private PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`.

    `fast=True` turns off fsync/full_page_writes (safe against killing postgres, not
    against an OS crash); `async_commit=True` additionally sets synchronous_commit=off,
    which can lose the last commits even on kill(), so it is opt-in.

    As root the server runs as the `postgres` OS user (postgres refuses to run as root);
    `data_dir` may then be relocated under the temp dir if its parents are not
    traversable by that user (see `relocated`).
    """

    name = "postgres"
    database = "dispatchd"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast: bool = False,
        async_commit: bool = False,
    ) -> None:
        super().__init__()
        self.async_commit = async_commit
        self.requested_data_dir = Path(data_dir).absolute()
        self.data_dir = self.requested_data_dir
        self._port = port if port is not None else free_port()
        self.fast = fast
        self.bin_dir = find_postgres_bin()
        self._user: pwd.struct_passwd | None = None
        if _is_root():
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root but there is no `postgres` OS user to run the server as") from None
            self.data_dir = self._placement_for_user(self._user)
        self.socket_dir = self._choose_socket_dir()

    # -- properties

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self._port}/{self.database}"

    def url_for(self, database: str) -> str:
        """URL of another database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self._port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    # -- placement / permissions (root only)

    def _placement_for_user(self, user: pwd.struct_passwd) -> Path:
        """Return where the data dir can live so `user` can reach it."""
        wanted = self.requested_data_dir
        # Create the parents we need and open them up for traversal (o+x) only if we
        # created them; existing directories are never chmod-ed behind the user's back.
        missing = [p for p in reversed(wanted.parents) if not p.exists()]
        wanted.parent.mkdir(parents=True, exist_ok=True)
        for p in missing:
            p.chmod(p.stat().st_mode | 0o711)
        blocked = [p for p in wanted.parents if not _traversable_by(p, user)]
        if not blocked:
            return wanted
        # Deterministic per requested path, so a restarted `make up` finds its data again.
        digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:12]
        fallback = Path(tempfile.gettempdir()) / f"dispatchd-pg-{digest}" / wanted.name
        log.warning(
            "postgres user cannot traverse %s; placing the postgres data dir at %s instead",
            blocked[-1],
            fallback,
        )
        fallback.parent.mkdir(parents=True, exist_ok=True)
        fallback.parent.chmod(0o711)
        return fallback

    def _choose_socket_dir(self) -> Path:
        candidate = self.data_dir.parent / f"{self.data_dir.name}.sock"
        if len(str(candidate)) <= _MAX_SOCKET_DIR_LEN:
            return candidate
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"dispatchd-pgsock-{digest}"

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        # postgres insists on 0700/0750 for its data directory.
        self.data_dir.chmod(0o700)
        self.socket_dir.chmod(0o700)
        if self._user is not None:
            _chown_tree(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            _chown_tree(self.socket_dir, self._user.pw_uid, self._user.pw_gid)

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
        log.info("starting postgres on 127.0.0.1:%d (data %s)", self._port, self.data_dir)
        logfile = self._open_log(self.log_path)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._server_kwargs(),
        )
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
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._accepting():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections on port {self._port} within "
                    f"{timeout:.0f}s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> None:
        """Shut down (SIGINT = postgres "fast" shutdown by default); SIGKILL after `timeout`."""
        if self._proc is not None:
            _terminate(self._proc, sig, timeout, self.name)
        self._close_log()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        self.start()

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


# --------------------------------------------------------------------------- redis


class RedisInstance(_Server):
    """A private redis-server on 127.0.0.1:`port` with its working dir in `data_dir`."""

    name = "redis"

    def __init__(self, data_dir: Path, port: int | None = None, persist: bool = False) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).absolute()
        self._port = port if port is not None else free_port()
        self.persist = persist
        self.binary = find_redis_server()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10) -> None:
        """Start redis-server and wait until it answers PING."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary,
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        log.info("starting redis on 127.0.0.1:%d (dir %s)", self._port, self.data_dir)
        logfile = self._open_log(self.log_path)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                reason = (
                    f"exited with {self._proc.returncode}"
                    if self._proc.poll() is not None
                    else f"did not answer PING within {timeout:.0f}s"
                )
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self._port} {reason}; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Shut down (SIGTERM: redis flushes the AOF if enabled); SIGKILL after `timeout`."""
        if self._proc is not None:
            _terminate(self._proc, sig, timeout, self.name)
        self._close_log()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()


# --------------------------------------------------------------------------- probes


def _asyncpg_dsn(url: str) -> str:
    # Accept SQLAlchemy-style schemes (postgresql+asyncpg://) like dispatchd.platform.db.
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


async def reachable_postgres(url: str, timeout: float = 2.0) -> bool:
    """Whether `SELECT 1` succeeds against `url` within `timeout` seconds."""
    import asyncpg

    async def probe() -> bool:
        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=timeout)
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close(timeout=timeout)

    try:
        return await asyncio.wait_for(probe(), timeout)
    except Exception:  # any failure (refused, auth, missing db, timeout) means "no"
        return False


async def reachable_redis(url: str, timeout: float = 2.0) -> bool:
    """Whether Redis at `url` answers PING within `timeout` seconds."""
    import redis.asyncio

    client = redis.asyncio.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except Exception:  # refused, auth, timeout ... all mean "not usable"
        return False
    finally:
        await client.aclose()
