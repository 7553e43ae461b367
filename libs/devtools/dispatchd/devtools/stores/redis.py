"""A private, throwaway redis-server on 127.0.0.1 with its working dir under the caller's directory."""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

from dispatchd.devtools.stores.discovery import find_redis_server
from dispatchd.devtools.stores.server import Server, tail

log = logging.getLogger(__name__)


class RedisInstance(Server):
    """A private redis-server on 127.0.0.1:`port` with its working dir in `data_dir`."""

    name = "redis"
    stop_signal = signal.SIGTERM  # redis flushes the AOF (if enabled) first

    def __init__(self, data_dir: Path, port: int | None = None, persist: bool = False) -> None:
        super().__init__(port)
        self.data_dir = Path(data_dir).absolute()
        self.persist = persist
        self.binary = find_redis_server()

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
        self._spawn(cmd, self.log_path, cwd=str(self.data_dir))
        assert self._proc is not None
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
                    f"redis-server on port {self._port} {reason}; log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)

