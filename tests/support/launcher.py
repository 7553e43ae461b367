"""Running `make up` (python -m dispatchd.devtools.up) from a test, on addresses nobody else uses.

Every listen address and private store port is a free one, so a developer's running stack is
never touched, and DATABASE_URL/REDIS_URL from the caller's environment do not leak in.
"""

from __future__ import annotations

import os
import subprocess
import sys

from dispatchd.devtools.stack import free_listen
from dispatchd.devtools.stores import free_port

UP = [sys.executable, "-m", "dispatchd.devtools.up"]


def launcher_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "DISPATCHD_CONTROL_PLANE_LISTEN": free_listen(),
            "DISPATCHD_GATEWAY_LISTEN": free_listen(),
            "DISPATCHD_SCHEDULER_LISTEN": free_listen(),
            "DISPATCHD_LOCAL_STANDBY_SCHEDULER_LISTEN": free_listen(),
            "DISPATCHD_DASHBOARD_LISTEN": free_listen(),
            "DISPATCHD_LOCAL_PG_PORT": str(free_port()),
            "DISPATCHD_LOCAL_REDIS_PORT": str(free_port()),
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "3",
            **extra,
        }
    )
    return env


def run_up(env: dict[str, str], *args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    """`up` with `args` to its end; its output is printed too (pytest shows it when the test fails)."""
    result = subprocess.run(
        [*UP, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    print(result.stdout, result.stderr, sep="\n")
    return result
