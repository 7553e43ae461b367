"""Run a dispatchd service as a separate OS process and wait for it to become healthy."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def python_module_argv(module: str) -> list[str]:
    """argv running `module` with the interpreter running the tests."""
    return [sys.executable, "-m", module]


class ServiceFailed(AssertionError):
    """A service process died or never became healthy (message includes its log tail)."""


class ServiceProcess:
    """One service in its own process group; stdout+stderr go to `<log_dir>/<name>.log`.

    `env` is layered over the current environment (so PATH, the venv etc. carry over).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env or {})
        self.cwd = cwd
        directory = log_dir or Path(tempfile.mkdtemp(prefix=f"dispatchd-{name}-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- state

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no output>"
        return "\n".join(text.splitlines()[-lines:])

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc

    def _failure(self, what: str) -> ServiceFailed:
        return ServiceFailed(f"{self.name}: {what}\n--- last output ({self.log_path}) ---\n{self.log_tail()}")

    # -- lifecycle

    def start(self) -> Self:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self._log is not None:
            self._log.close()
        # Append, so output of a restarted service follows that of its predecessor.
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self._log.write(f"=== start {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: kill() also reaches its children
        )
        return self

    def wait_healthy(self, target: str, timeout: float = 20) -> None:
        """Poll grpc.health.v1 Check(service="") at `target` until SERVING."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not self.is_running():
                raise self._failure(f"exited with {self.returncode} before becoming healthy")
            # A fresh channel per attempt: a long-lived one would back off for seconds
            # after the first refused connection. Ignore *_proxy env vars for localhost.
            with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
            if time.monotonic() > deadline:
                raise self._failure(f"not SERVING at {target} within {timeout:.0f}s ({last})")
            time.sleep(0.1)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises subprocess.TimeoutExpired after `timeout`."""
        code = self._require().wait(timeout)
        self._close_log()
        return code

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL the group if it takes longer than `timeout`."""
        proc = self._require()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise self._failure(f"did not exit within {timeout:.0f}s of SIGTERM; killed") from None
        self._kill_group()
        self._close_log()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (simulates a crash)."""
        proc = self._require()
        self._kill_group()
        proc.wait()
        self._close_log()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            if self.is_running():
                with contextlib.suppress(ServiceFailed):
                    self.terminate()
            else:
                self._kill_group()
                self._close_log()
