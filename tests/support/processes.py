"""What the `spawn_service` fixture hands a test: processes it starts, all stopped when the test ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dispatchd.devtools.stack import ServiceProcess, service_process


class Spawner:
    """`spawn(name, argv, env)` starts any process; `spawn.service(kind, env)` a dispatchd service.

    Logs land in `log_dir`; `stop_all()` stops (SIGTERM, then SIGKILL) whatever still runs, in
    reverse start order, so tests need not clean up after failures.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[ServiceProcess] = []

    def __call__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        process = ServiceProcess(name, argv, env or {}, log_dir=self.log_dir)
        self._started.append(process)
        return process.start()

    def service(self, kind: str, env: dict[str, str], *, wait: bool = True, **options: Any) -> ServiceProcess:
        """Service `kind` on a free port (`process.address`), healthy unless `wait=False`."""
        process = service_process(kind, env, self.log_dir, **options)
        self._started.append(process)
        process.start()
        if wait:
            process.wait_healthy()
        return process

    def stop_all(self) -> None:
        for process in reversed(self._started):
            process.stop()
