"""`make chaos`: thousands of jobs while processes are killed at random; then prove nothing broke.

    python -m perf.chaos [--profile short|long] [--seed N] [--out PATH]

Starts private Postgres and Redis, a control plane, a worker gateway, two schedulers and
several workers (the builtins, recorded in a ledger: perf.chaos_handlers), each its own
process. While jobs are submitted (paced over the profile's window) and some cancelled,
the driver (perf.chaos_driver) SIGKILLs the scheduler leader, the gateway, the control
plane, workers, Redis (restarted empty) and Postgres (restarted on its data). Then the
chaos stops, the run waits for every job to finish, and checks (perf.chaos_checks) that
every job is terminal, none was lost or doubled, none resurrected, attempts match the
execution history and outcomes fit each job type. Writes evidence/drills/chaos-<profile>.json.
"""

from __future__ import annotations

import os

# Postgres and Redis are restarted from this process (fork+exec); gRPC's fork handlers
# must stay off for that. Read when grpc is first imported, so before anything below.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dispatchd.common import loops
from dispatchd.devtools.stack import Stack
from dispatchd.platform.db import create_pool
from perf.chaos_checks import Check, Snapshot, TerminalWatch, check_all, statistics
from perf.chaos_driver import KINDS, Driver, DriverReport
from perf.chaos_handlers import LEDGER_ENV, read_ledger
from perf.chaos_load import Client, Receipts, cancel_some, make_workload, submit_all
from perf.cluster import topology
from perf.evidence import ROOT, header


@dataclass(frozen=True)
class Profile:
    name: str
    jobs: int
    window: float  # seconds over which jobs are submitted while the chaos runs
    cancels: int
    workers: int
    concurrency: int
    interval: tuple[float, float]  # pause between strikes
    drain_timeout: float
    max_sleep: float  # longest builtin.sleep


PROFILES = {
    "short": Profile("short", 1200, 30.0, 60, 3, 8, (0.5, 2.0), 90.0, 1.0),
    "long": Profile("long", 10000, 240.0, 500, 3, 16, (1.0, 5.0), 300.0, 2.0),
}

# Short leases and heartbeats: work held by a dead gateway's streams comes back in seconds.
SETTINGS = {
    "DISPATCHD_LEASE_SECONDS": "5",
    "DISPATCHD_WORKER_OFFLINE_SECONDS": "5",
    "DISPATCHD_RECONCILE_SECONDS": "1",
}


@dataclass
class Outcome:
    evidence: dict[str, Any]
    passed: bool
    log_dir: Path

    def summary(self) -> str:
        failing = {n: c for n, c in self.evidence["invariants"].items() if not c["ok"]}
        return json.dumps(
            {
                "failing": failing,
                "driver_failures": self.evidence["chaos"]["failures"],
                "unexpected_exits": self.evidence["chaos"]["unexpected_exits"],
                "unacknowledged": self.evidence["jobs"]["unacknowledged"],
                "logs": str(self.log_dir),
            },
            indent=2,
            default=str,
        )


def run(profile: Profile, directory: Path, out: Path | None, seed: int | None = None) -> Outcome:
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    ledger = directory / "ledger.txt"
    platform = topology(
        workers=profile.workers,
        concurrency=profile.concurrency,
        handlers=("--handlers", "perf.chaos_handlers:register"),
        settings=SETTINGS,
        worker_env={LEDGER_ENV: str(ledger)},
    )
    wall = time.monotonic()
    with Stack(platform, directory) as stack:
        evidence = loops.run(_chaos(stack, profile, rng, ledger))
    evidence["timing_seconds"]["wall"] = round(time.monotonic() - wall, 1)
    evidence["seed"] = seed
    passed = all(c["ok"] for c in evidence["invariants"].values())
    evidence["passed"] = passed
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(evidence, indent=2, default=str) + "\n")
    return Outcome(evidence, passed, stack.log_dir)


async def _chaos(stack: Stack, profile: Profile, rng: random.Random, ledger: Path) -> dict[str, Any]:
    specs = make_workload(f"{rng.randrange(1 << 32):08x}", profile.jobs, rng, profile.max_sleep)
    receipts = Receipts()
    client = Client(stack.control_plane_target, receipts)
    driver = Driver(stack, random.Random(rng.random()), profile.interval)
    stop = asyncio.Event()
    watch = TerminalWatch(stack.database_url)
    began = time.monotonic()
    chaos = asyncio.create_task(driver.run(stop, min_strikes=len(KINDS)))
    watching = asyncio.create_task(watch.run(stop))
    try:
        submitted = asyncio.Event()
        cancels = asyncio.create_task(cancel_some(client, specs, profile.cancels, profile.window, rng, submitted))
        await submit_all(client, specs, profile.window)
        submit_seconds = time.monotonic() - began
        submitted.set()
        await cancels
        stop.set()
        report = await chaos
        await watching
        chaos_seconds = time.monotonic() - began
        report.exits += await asyncio.to_thread(stack.unexpected_exits)
        drained_at = time.monotonic()
        pool = await create_pool(stack.database_url, min_size=1, max_size=4)
        try:
            snap, drained = await _drain(pool, profile.drain_timeout)
            drain_seconds = time.monotonic() - drained_at
        finally:
            await pool.close()
    finally:
        stop.set()
        for task in (chaos, watching):
            if not task.done():
                await task
        await client.close()
    entries = read_ledger(ledger)
    checks = check_all(specs, receipts, snap, entries)
    checks += [watch.check(snap), _recovered(report, receipts)]
    return {
        **header(f"chaos-{profile.name}"),
        "profile": asdict(profile),
        "setup": {
            "processes": f"control plane, worker gateway, 2 schedulers, {profile.workers} workers "
            f"(concurrency {profile.concurrency}); private Postgres and Redis",
            "settings": SETTINGS,
            "job_mix": "60% builtin.echo, 15% builtin.sleep (0.1-max_sleep s), 15% builtin.flaky "
            "(fails 1-2 attempts, max_attempts planned+5), 10% builtin.fail (max_attempts 2); backoff 50-500 ms",
        },
        "jobs": {
            "submitted": len(specs),
            "acknowledged": len(receipts.acknowledged),
            "unacknowledged": receipts.unacknowledged,
            "deduplicated_retries": receipts.deduplicated,
            "drained": drained,
            "terminal_state_samples_during_chaos": watch.samples,
            **statistics(specs, receipts, snap, entries),
        },
        "cancels": {"requested": sum(receipts.cancel_outcomes.values()), **dict(receipts.cancel_outcomes)},
        "rpc_errors_seen_by_clients": dict(sorted(receipts.errors.items())),
        "chaos": _chaos_figures(report, stack),
        "timing_seconds": {
            "submitting": round(submit_seconds, 1),
            "chaos": round(chaos_seconds, 1),
            "drain_after_chaos_stopped": round(drain_seconds, 2),
        },
        "invariants": {c.name: c.as_dict() for c in checks},
    }


async def _drain(pool: Any, timeout: float) -> tuple[Snapshot, bool]:
    """Wait until no job is active (or the timeout); then read everything."""
    deadline = time.monotonic() + timeout
    drained = False
    while time.monotonic() < deadline:
        if await Snapshot.count_active(pool) == 0:
            drained = True
            break
        await asyncio.sleep(0.25)
    return await Snapshot.load(pool), drained


def _logged_errors(log_dir: Path) -> dict[str, int]:
    """Error-level lines the services logged, by logger, message and exception (counts)."""
    found: Counter[str] = Counter()
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"level": "error"' not in line and '"level": "critical"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            last = (record.get("exc") or "").strip().splitlines()[-1:] or [""]
            found[f"{path.stem}: {record.get('logger')}: {record.get('msg')} {last[0]}".strip()] += 1
    return dict(found.most_common())


def _recovered(report: DriverReport, receipts: Receipts) -> Check:
    """Every killed part came back, nothing died on its own, every submit was answered."""
    check = Check("platform_recovered")
    for failure in report.failures:
        check.fail(f"did not come back: {failure}")
    for exit in report.exits:
        check.fail(f"{exit.name} exited on its own with status {exit.code}")
    for key in receipts.unacknowledged:
        check.fail(f"submit of {key} never answered")
    return check


def _chaos_figures(report: DriverReport, stack: Stack) -> dict[str, Any]:
    return {
        "kills_by_kind": dict(sorted(report.kills().items())),
        "restarts": dict(sorted(stack.restarts.items())),
        "strikes": [asdict(s) for s in report.strikes],
        "failures": report.failures,
        "unexpected_exits": [{"name": e.name, "code": e.code, "log_tail": e.log_tail} for e in report.exits],
        "errors_logged_by_services": _logged_errors(stack.log_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("CHAOS_PROFILE", "long"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default evidence/drills/chaos-<profile>.json")
    parser.add_argument("--keep", action="store_true", help="keep the logs and ledger even if the run passes")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = args.out or ROOT / "evidence" / "drills" / f"chaos-{profile.name}.json"
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-chaos-"))
    outcome = run(profile, directory, out, args.seed)
    print(json.dumps(outcome.evidence, indent=2, default=str))
    if not outcome.passed:
        print(outcome.summary(), file=sys.stderr)  # names the log directory, kept for reading
        return 1
    if args.keep:
        print(f"logs kept in {outcome.log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
