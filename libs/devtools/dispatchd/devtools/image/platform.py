"""The platform run from the image: migrate, the three services and a worker, each a `buildah run`.

Invariant: every program runs from the one working container, as the image's user, on the
host's network (chroot isolation), against stores given by URL; `stop()` ends each process it
started (SIGTERM, then SIGKILL of its group) and then, by pid, any program of the image its
`buildah run` left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from dispatchd.devtools.image.buildah import Buildah, Container
from dispatchd.devtools.stack import ServiceProcess, free_listen
from dispatchd.devtools.stack.topology import SERVICES

ENTRYPOINT = "/usr/local/bin/dispatchd"
# What a program of the image is, seen from the host: the console scripts' interpreter lines.
PROGRAM_PREFIX = "/opt/dispatchd/bin/dispatchd-"
MIGRATE_TIMEOUT = 300.0


def image_programs() -> dict[int, tuple[str, int]]:
    """pid -> (program, uid) of every process on this machine running a program of the image."""
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        program = next((a.decode() for a in argv if a.decode(errors="replace").startswith(PROGRAM_PREFIX)), None)
        if program is None:
            continue
        uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
        found[int(entry.name)] = (program.removeprefix(PROGRAM_PREFIX), uid)
    return found


class ImagePlatform:
    def __init__(self, buildah: Buildah, container: Container, database_url: str, redis_url: str, logs: Path) -> None:
        self.buildah = buildah
        self.container = container
        self.env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        self.logs = logs
        self.processes: list[ServiceProcess] = []
        self.before = set(image_programs())

    def migrate(self) -> None:
        argv = self.buildah.run_argv(self.container, [ENTRYPOINT, "migrate"], self.env)
        log_path = self.logs / "migrate.log"
        with open(log_path, "wb") as log:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=MIGRATE_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"migrate from the image failed ({done.returncode}); see {log_path}")

    def start_services(self) -> dict[str, str]:
        """Start and wait healthy: program name -> listen address."""
        for service in SERVICES:
            listen = free_listen()
            env = {**self.env, service.listen_variable: listen}
            argv = self.buildah.run_argv(self.container, [ENTRYPOINT, service.kind], env)
            process = ServiceProcess(service.kind, argv, {}, self.logs, listen=listen)
            self.processes.append(process.start())
            process.wait_healthy()
        return {p.name: p.address for p in self.processes}

    def start_worker(self, gateway: str) -> None:
        argv = [ENTRYPOINT, "worker", "--target", gateway, "--builtins", "--worker-id", "image-test-worker"]
        process = ServiceProcess("worker", self.buildah.run_argv(self.container, argv, {}), {}, self.logs)
        self.processes.append(process.start())

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for pid in set(image_programs()) - self.before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
