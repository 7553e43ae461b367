"""Runs perf/locustfile.py headless in a process of its own and reads back what locust measured.

Invariant: the figures come from locust's own CSV statistics (`--csv`), per method and in
aggregate, with its failures by message; locust's exit status 1 only means some request
failed, which the failure counts already say, so only a missing statistics file is an error.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perf.cpu import CpuMeter, per_job_ms
from perf.evidence import ROOT
from perf.progress import Progress

LOCUSTFILE = ROOT / "perf" / "locustfile.py"
STOP_TIMEOUT = 10
COLUMNS = {"p50": "50%", "p90": "90%", "p99": "99%", "max": "100%"}


def parse_stats(text: str) -> dict[str, dict[str, Any]]:
    """locust's <prefix>_stats.csv: requests, failures, calls/s and latency percentiles (ms) by name."""
    found = {}
    for row in csv.DictReader(text.splitlines()):
        figures: dict[str, Any] = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "per_second": round(float(row["Requests/s"]), 1),
        }
        for key, column in COLUMNS.items():
            value = row.get(column, "N/A")
            figures[key] = None if value in ("", "N/A") else float(value)
        found[row["Name"]] = figures
    return found


def parse_failures(text: str) -> dict[str, int]:
    return {f"{row['Name']}: {row['Error']}": int(row["Occurrences"]) for row in csv.DictReader(text.splitlines())}


def so_far(prefix: Path) -> str:
    """What locust's periodically rewritten statistics say now (for the progress line)."""
    try:
        total = parse_stats(prefix.with_name("locust_stats.csv").read_text()).get("Aggregated")
    except (OSError, KeyError, ValueError):
        total = None  # not written yet, or caught mid-write
    return "starting" if total is None else f"{total['requests']} calls, {total['failures']} failed"


def run_locust(target: str, users: int, seconds: float, work_dir: Path, pids: Mapping[str, int]) -> dict[str, Any]:
    prefix = work_dir / "locust"
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", target, "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s",
        "--stop-timeout", str(STOP_TIMEOUT), "--csv", str(prefix), "--loglevel", "WARNING",
    ]  # fmt: skip
    progress = Progress("locust", seconds)
    with open(work_dir / "locust.log", "wb") as log:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        meter = CpuMeter(pids)
        meter.start()
        started = time.monotonic()
        # wait4, not poll(): once reaped, locust's own CPU is only in the rusage of its exit.
        while not (waited := os.wait4(proc.pid, os.WNOHANG))[0]:
            progress.show(f"{users} gRPC users, {so_far(prefix)}")
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(waited[1])
        cpu = meter.stop() | {"locust": round(waited[2].ru_utime + waited[2].ru_stime, 3)}
        elapsed = time.monotonic() - started
    progress.show(f"exit {proc.returncode}", final=True)
    stats_path = prefix.with_name("locust_stats.csv")
    if not stats_path.exists():
        tail = (work_dir / "locust.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust wrote no statistics (exit {proc.returncode}):\n{tail}")
    stats = parse_stats(stats_path.read_text())
    failures_path = prefix.with_name("locust_failures.csv")
    total = stats.get("Aggregated", {})
    return {
        "users": users,
        "seconds": seconds,
        "wall_seconds": round(elapsed, 3),
        "by_method": {name: figures for name, figures in stats.items() if name != "Aggregated"},
        "aggregated": total,
        "failures": parse_failures(failures_path.read_text()) if failures_path.exists() else {},
        "cpu_seconds": cpu,
        "cpu_ms_per_call": per_job_ms(cpu, int(total.get("requests", 0))),
    }
