"""Running a perf driver as a process of its own and taking back the JSON it wrote.

Invariant: a driver's progress reaches the terminal (stderr is inherited) and its result
comes only from the file it wrote; a driver that fails or times out yields a `failed`
entry naming its exit status, so one broken phase never hides the others' evidence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perf.evidence import ROOT


def pid_args(pids: Mapping[str, int]) -> list[str]:
    return [arg for name, pid in pids.items() for arg in ("--pid", f"{name}={pid}")]


def run_driver(
    module: str,
    args: Sequence[str],
    out: Path,
    timeout: float,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    argv = [python, "-m", module, *args, "--out", str(out)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    try:
        done = subprocess.run(argv, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"{module} did not finish within {timeout:.0f}s"}
    if done.returncode != 0 or not out.exists():
        return {"failed": f"{module} exited with status {done.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text())
    return result
