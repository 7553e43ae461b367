"""Celery for `make perf-compare`: its own virtualenv, a private Redis, a prefork worker, its driver.

Invariant: nothing of Celery enters our virtualenv; .perf/celery-venv is created from PyPI
on first use (CELERY_REQUIREMENT pinned) with the interpreter running us, so both sides run
the same Python. The worker (prefork, concurrency 2, acks_late, Redis broker and result
backend) and Redis are separate processes, started through the stack harness's process and
store classes, and stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.devtools.stores import RedisInstance
from perf.evidence import ROOT

VENV = ROOT / ".perf" / "celery-venv"
CELERY_REQUIREMENT = "celery[redis]==5.7.0"
POOL = "prefork"
CONCURRENCY = 2


def python() -> str:
    return str(VENV / "bin" / "python")


def ensure_venv() -> str:
    """The Celery virtualenv's interpreter, creating the venv (and installing Celery) when missing."""
    stamp = VENV / f".installed-{CELERY_REQUIREMENT}"
    if not stamp.exists():
        print(f"[celery] creating {VENV.relative_to(ROOT)} with {CELERY_REQUIREMENT}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([python(), "-m", "pip", "install", "-q", CELERY_REQUIREMENT], check=True)
        stamp.touch()
    return python()


@dataclass
class CeleryStack:
    redis: RedisInstance
    worker: ServiceProcess

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def pids(self) -> dict[str, int]:
        found = {"celery-worker": self.worker.pid}
        if self.redis.pid is not None:
            found["redis"] = self.redis.pid
        return found


@contextlib.contextmanager
def celery_stack(directory: Path) -> Iterator[CeleryStack]:
    """A private Redis and one Celery worker (not yet known to be ready: ping it through the driver)."""
    redis = RedisInstance(directory / "celery-redis")
    redis.start()
    argv = [python(), "-m", "celery", "-A", "perf.celery_tasks", "worker", "--pool", POOL,
            "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING"]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PERF_CELERY_REDIS": redis.url}
    worker = ServiceProcess("celery-worker", argv, env, directory / "logs", cwd=ROOT)
    try:
        worker.start()
        yield CeleryStack(redis, worker)
    finally:
        worker.stop()
        redis.stop()
