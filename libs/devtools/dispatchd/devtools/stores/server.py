"""What both private store servers share: a child process in its own session, its log, SIGKILL.

Invariant: signals go to the server's whole process group (its backends too) and only while
the leader is unreaped, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Self

from dispatchd.devtools.stores.ports import free_port

log = logging.getLogger(__name__)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The server runs in its own session (pgid == pid), so this also reaches its
    # children (postgres backends) without touching anything else. Only while the
    # leader is unreaped: until then its pid (= the pgid) cannot be reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float, name: str) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; sending SIGKILL", name, timeout)
            signal_group(proc, signal.SIGKILL)
            proc.wait()


class Server:
    """Common child-process bookkeeping for the two server kinds."""

    name = "server"
    stop_signal: int = signal.SIGTERM

    def __init__(self, port: int | None) -> None:
        self._port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    @property
    def port(self) -> int:
        """Where it listens on 127.0.0.1 (chosen free at construction unless given)."""
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, simulating a crash."""
        if self._proc is not None:
            signal_group(self._proc, signal.SIGKILL)
            self._proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _spawn(self, cmd: list[str], log_path: Path, **popen: Any) -> None:
        """Start `cmd` in its own session, output appended to `log_path`."""
        self._close_log()
        self._log_handle = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        log.info("starting %s on 127.0.0.1:%d", self.name, self._port)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True,
            **popen,
        )  # fmt: skip

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, sig: int | None = None, timeout: float = 15) -> None:
        """Shut down with `sig` (default: the server's own graceful signal); SIGKILL after `timeout`."""
        if self._proc is not None:
            terminate(self._proc, sig or self.stop_signal, timeout, self.name)
        self._close_log()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        self.start()
