"""What every evidence file records about where it was measured."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
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


def write(path: Path, evidence: dict[str, Any]) -> None:
    """Write an evidence file (creating its directory) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(evidence, indent=2)
    path.write_text(text + "\n")
    print(text)
