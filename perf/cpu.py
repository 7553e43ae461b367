"""CPU seconds a process (and, for servers that fork, its children) spent over a measured window.

Reads utime+stime from /proc/<pid>/stat (field 14 and 15, clock ticks). Invariant: a
window's figure is end minus start of the same processes; a process that appears during
the window counts from zero, one that ends during it counts up to its last reading (its
ticks since that reading are lost, which only matters for short-lived Postgres backends).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    ticks: int  # utime + stime


def parse_stat(text: str) -> Stat:
    """One /proc/<pid>/stat line; the command (field 2) may hold spaces and parentheses."""
    pid, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return Stat(int(pid), int(fields[1]), int(fields[11]) + int(fields[12]))


def read_stat(pid: int, proc: Path = PROC) -> Stat | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone, or a kernel thread we cannot read


def tree(root: int, proc: Path = PROC) -> dict[int, int]:
    """Ticks of `root` and every descendant, by pid."""
    stats = [s for s in (read_stat(int(p.name), proc) for p in proc.iterdir() if p.name.isdigit()) if s is not None]
    children: dict[int, list[Stat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    found: dict[int, int] = {}
    own = next((s for s in stats if s.pid == root), None)
    pending = [own] if own is not None else []
    while pending:
        stat = pending.pop()
        found[stat.pid] = stat.ticks
        pending.extend(children.get(stat.pid, ()))
    return found


@dataclass
class CpuMeter:
    """Named process trees whose CPU is sampled at `start()` and `stop()`."""

    pids: Mapping[str, int]
    proc: Path = PROC
    _start: dict[str, dict[int, int]] = field(default_factory=dict)

    def sample(self) -> dict[str, dict[int, int]]:
        return {name: tree(pid, self.proc) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._start = self.sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per name since start()."""
        end = self.sample()
        return {name: seconds(self._start.get(name, {}), end[name]) for name in self.pids}


def seconds(start: Mapping[int, int], end: Mapping[int, int]) -> float:
    """CPU seconds from `start` to `end` readings (by pid) of one tree; vanished pids count to their last reading."""
    # A pid only in `start` ended inside the window: its ticks after start() are unknown, so 0.
    ticks = sum(t - start.get(pid, 0) for pid, t in end.items())
    return round(ticks / TICKS, 3)


def per_job_ms(cpu: Mapping[str, float], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job of each process; empty when no job completed."""
    if jobs <= 0:
        return {}
    return {name: round(value * 1000 / jobs, 3) for name, value in cpu.items()}


def pid_arg(text: str) -> tuple[str, int]:
    """`NAME=PID` from a command line (how drivers learn whose CPU to read)."""
    name, _, pid = text.partition("=")
    return name, int(pid)
