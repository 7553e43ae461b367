"""One supervised service process: start, wait healthy, stop gracefully, kill, restart.

Invariant: the process runs in its own session (process group), so `kill()` takes its
children down too and Ctrl-C in a terminal reaches only the launcher, which stops its
processes in order. Its output goes to `<log_dir>/<name>.log`: rewritten by the first
start of this object, appended to (after a `=== start` line) by every restart, so a log
tells the whole story of one service in one run. Whenever it dies before it should, the
error says so with the tail of that log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Self

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools.stack.health import wait_serving
from dispatchd.devtools.stores import port_free

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 45.0
STOP_GRACE = 15.0


def python_module_argv(module: str) -> list[str]:
    """argv running `module` with the interpreter running us (the venv's)."""
    return [sys.executable, "-m", module]


class ServiceFailed(RuntimeError):
    """A process died, never became healthy or would not stop (the message has its log tail)."""


class ServiceProcess:
    """One process in its own group; `env` is layered over the current environment.

    `listen` is the address it serves on (checked to be free before each start, so a busy
    port is a clear error and not a confusing crash); `health` is where it answers the
    health service (default: `listen`), reached with `security` (default: plaintext);
    `metrics` is where it serves Prometheus metrics, if anywhere (the caller passes it on).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        cwd: Path | None = None,
        *,
        listen: str | None = None,
        health: str | None = None,
        security: ClientSecurity | None = None,
        metrics: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env or {})
        self.cwd = cwd
        self.listen = listen
        self.health = health or listen
        self.security = security
        self.metrics = metrics
        directory = log_dir or Path(tempfile.mkdtemp(prefix=f"dispatchd-{name}-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0

    # -- state

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def address(self) -> str:
        """Where it listens (for services; a worker has no address)."""
        if self.listen is None:
            raise RuntimeError(f"{self.name} listens nowhere")
        return self.listen

    @property
    def metrics_url(self) -> str:
        """Where its Prometheus metrics are scraped."""
        if self.metrics is None:
            raise RuntimeError(f"{self.name} serves no metrics")
        return f"http://{self.metrics}/metrics"

    @property
    def started(self) -> bool:
        return self._proc is not None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no output>"
        return "\n".join(text.splitlines()[-lines:]) or "<no output>"

    def failure(self, what: str) -> ServiceFailed:
        return ServiceFailed(f"{self.name} {what}\n--- last output ({self.log_path}) ---\n{self.log_tail(40)}")

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc

    def _alive(self) -> None:
        if not self.is_running():
            raise self.failure(f"exited with status {self.returncode} before becoming healthy")

    # -- lifecycle

    def start(self) -> Self:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.listen is not None and not port_free(self.listen):
            raise ServiceFailed(
                f"{self.name}: {self.listen} is already in use (another `make up` still running?); "
                "stop it or choose another address"
            )
        self._close_log()
        self._log = open(self.log_path, "ab" if self._starts else "wb")  # noqa: SIM115 - as long as the child
        self._log.write(f"=== start {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._starts += 1
        return self

    def wait_healthy(self, target: str | None = None, timeout: float = HEALTH_TIMEOUT) -> None:
        """Until the health service at `target` (default: `health`) says SERVING."""
        target = target or self.health
        if target is None:
            raise RuntimeError(f"{self.name} serves no health endpoint")
        try:
            wait_serving(target, timeout, self.security, alive=self._alive)
        except TimeoutError as exc:
            raise self.failure(str(exc)) from None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises subprocess.TimeoutExpired after `timeout`."""
        code = self._require().wait(timeout)
        self._close_log()
        return code

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL the group after `grace` seconds; the exit status (None: never started)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, grace)
        self.kill()
        return self._proc.returncode

    def terminate(self, timeout: float = STOP_GRACE) -> int:
        """Like stop(), but a service that needs SIGKILL is an error (graceful shutdown is under test)."""
        proc = self._require()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise self.failure(f"did not exit within {timeout:.0f}s of SIGTERM; killed") from None
        self.kill()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash); no-op when it was never started."""
        if self._proc is None:
            return
        # Even after the leader exited: children it left behind (a worker's shell jobs) keep the
        # group, and with it the group id, alive; once the group is empty this is ESRCH.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._close_log()

    def restart(self, wait: bool = True) -> None:
        """SIGKILL (if running) and start again with the same argv, env and address."""
        self.kill()
        self.start()
        if wait and self.health is not None:
            self.wait_healthy()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self if self.started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
