"""The load profiles of `make perf-smoke` / `make perf PROFILE=...`: how much of each phase, for how long.

Invariant: a profile is plain data and the only source of phase sizes; command-line
overrides (`--duration`, `--jobs`) scale a copy of it, and the evidence records the
profile exactly as run. Wall time (as the README says, stack start and stop included):
smoke ~2 min, average ~7 min (60 s sustained saturation per submit mode), stress ~15 min.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

LOCUST_MIN_SECONDS = 5.0


@dataclass(frozen=True)
class Profile:
    name: str
    locust_users: int
    locust_seconds: float
    worker_streams: int
    worker_seconds: float  # heartbeating, after every stream registered
    open_rate: float  # jobs/s of the open-loop latency run
    open_seconds: float
    saturation_seconds: float  # per submit mode, the first `warmup_seconds` not counted
    warmup_seconds: float
    bulk_jobs: int  # BatchSubmitJobs with no workers
    batch_size: int = 200
    open_batch: int = 10  # open loop with BatchSubmitJobs: this many jobs per call (10 calls/s at 100/s)
    window: int = 64  # SubmitJob calls in flight from the one pipelining client
    backlog: int = 2000  # queued jobs above which the saturation submitter waits (~0.5-5 s of work)
    compare_jobs: int = 5000  # perf-compare's saturation runs: this many jobs on each side

    def scaled(self, seconds: float | None = None, jobs: int | None = None) -> Profile:
        """Every phase shortened to `seconds` and every job count capped at `jobs` (tiny runs, tests)."""
        changes: dict[str, float | int] = {}
        if seconds is not None:
            changes |= {
                # locust's first seconds go to starting and spawning users: too short a run has no calls.
                "locust_seconds": max(seconds, LOCUST_MIN_SECONDS),
                "worker_seconds": seconds,
                "open_seconds": seconds,
                "saturation_seconds": seconds + min(self.warmup_seconds, seconds / 2),
                "warmup_seconds": min(self.warmup_seconds, seconds / 2),
            }
        if jobs is not None:
            changes |= {
                "bulk_jobs": min(self.bulk_jobs, jobs),
                "batch_size": min(self.batch_size, jobs),
                "open_batch": min(self.open_batch, jobs),
                "backlog": min(self.backlog, jobs),
                "compare_jobs": min(self.compare_jobs, jobs),
                "worker_streams": min(self.worker_streams, jobs),
                "locust_users": min(self.locust_users, max(1, jobs // 10)),
            }
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


PROFILES = {
    p.name: p
    for p in (
        Profile("smoke", locust_users=20, locust_seconds=12, worker_streams=500, worker_seconds=10,
                open_rate=100, open_seconds=20, saturation_seconds=12, warmup_seconds=2, bulk_jobs=10_000),
        Profile("average", locust_users=50, locust_seconds=60, worker_streams=500, worker_seconds=30,
                open_rate=100, open_seconds=60, saturation_seconds=65, warmup_seconds=5, bulk_jobs=50_000,
                compare_jobs=20_000),
        Profile("stress", locust_users=100, locust_seconds=120, worker_streams=1000, worker_seconds=60,
                open_rate=100, open_seconds=120, saturation_seconds=250, warmup_seconds=10, bulk_jobs=200_000,
                backlog=2000, compare_jobs=60_000),
    )
}  # fmt: skip
