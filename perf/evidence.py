"""What every evidence file records about where it was measured."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(benchmark: str) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def verdict(evidence: dict[str, Any], directory: Path, drill: str) -> int:
    """Print a drill's evidence; exit status 1 (its logs kept) unless it passed, else 0 (its files removed)."""
    print(json.dumps(evidence, indent=2))
    if not evidence["passed"]:
        print(f"{drill} drill FAILED: {evidence.get('violations', '')}; logs kept in {directory}", file=sys.stderr)
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    return 0
