"""`make perf-smoke` / `make perf PROFILE=...`: the performance harness, written as evidence.

Starts the stack through dispatchd.devtools.stack (private Postgres with stock durable
settings and Redis, a control plane, a worker gateway, two schedulers and --workers SDK
workers loading the perf.noop handler, each its own process), or targets a running one
(--target and friends), then runs three drivers, each in a process of its own:

1. locust, gRPC users against the control plane (submit, get, list, wait mix);
2. the worker-load driver: --profile's streams registering and heartbeating each second;
3. the end-to-end driver: open loop at a fixed rate and saturation, each with single
   SubmitJob calls and with BatchSubmitJobs, then bulk enqueue with the workers stopped
   (SubmitJob alone: its calls per second; then BatchSubmitJobs).

It prints one summary table and writes evidence/perf/<profile>.json. Invariant: every
figure in that file was measured in this run (nothing is typed in), and the file says at
which commit, on what machine, with which versions and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dispatchd.devtools.stack import Stack, Stores, Topology, Workers
from perf import provenance
from perf.cpu import pid_arg
from perf.drivers import pid_args, run_driver
from perf.evidence import ROOT
from perf.locust_run import run_locust
from perf.noop import JOB_TYPE
from perf.profiles import PROFILES, Profile
from perf.scrape import SCRAPE_SECONDS, scraping
from perf.summary import render, rows

# bulk/single is SubmitJob alone (nobody running the jobs): calls per second and their latency.
E2E_PHASES = (
    ("open", "single"), ("open", "batch"), ("saturation", "single"), ("saturation", "batch"), ("bulk", "single"),
    ("bulk", "batch"),
)  # fmt: skip
STACK_SETTINGS = {
    "DISPATCHD_LOG_LEVEL": "WARNING",
    "PYTHONPATH": str(ROOT),  # the workers load perf.noop
    # One anonymous identity holds every stream of the worker-load driver.
    "DISPATCHD_MAX_STREAMS_PER_IDENTITY": "100000",
}


class Target:
    """Where the drivers point and whose CPU they read: a stack started here, or a given one."""

    def __init__(self, control_plane: str, gateway: str, database_url: str, redis_url: str) -> None:
        self.control_plane = control_plane
        self.gateway = gateway
        self.database_url = database_url
        self.redis_url = redis_url
        self.pids: dict[str, int] = {}
        self.stack: Stack | None = None
        self.metrics_urls: list[str] = []

    @classmethod
    def of(cls, stack: Stack) -> Target:
        target = cls(stack.control_plane_target, stack.gateway_target, stack.database_url, stack.redis_url)
        target.stack = stack
        target.pids = {name: process.pid for name, process in stack.processes.items()}
        for server in (stack.postgres, stack.redis):
            if server is not None and server.pid is not None:
                target.pids[server.name] = server.pid
        target.metrics_urls = list(stack.metrics_urls().values())
        return target

    def stop_workers(self) -> str | None:
        """Stop the SDK workers (bulk enqueue runs without them); why not, when they are not ours."""
        if self.stack is None:
            return "a given stack: its workers are not ours to stop"
        for name in self.stack.workers:
            self.stack.processes[name].stop()
            self.pids.pop(name, None)
        return None


def topology(args: argparse.Namespace) -> Topology:
    """What --workers, --concurrency, --metrics and --audit-level describe (perf.compare has them too)."""
    group = Workers(args.workers, ("--handlers", "perf.noop:register"), concurrency=args.concurrency)
    return Topology(
        workers=(group,),
        stores=Stores(fast_postgres=False),  # stock durable settings: fsync on
        metrics=args.metrics,
        settings={**STACK_SETTINGS, "DISPATCHD_AUDIT_LEVEL": args.audit_level},
    )


def add_stack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="SDK worker processes (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=10, help="each worker's concurrency (default %(default)s)")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True, help="serve and scrape /metrics")
    p.add_argument("--audit-level", default="all", choices=["all", "mutations", "denied", "off"])


@contextlib.contextmanager
def target_for(args: argparse.Namespace, directory: Path) -> Iterator[Target]:
    if args.target:
        given = Target(args.target, args.gateway, args.database_url, args.redis_url)
        given.pids = dict(args.pid)
        yield given
        return
    with Stack(
        topology(args), directory / "stack", say=lambda text: print(f"[stack] {text}", file=sys.stderr)
    ) as stack:
        yield Target.of(stack)


def e2e_args(profile: Profile, phase: str, submit: str, target: Target, max_jobs: int = 0) -> list[str]:
    """perf.e2e's arguments for one phase of `profile`; `max_jobs` caps a saturation run's jobs."""
    return [
        "--phase", phase, "--submit", submit, "--target", target.control_plane,
        "--database-url", target.database_url, "--rate", str(profile.open_rate),
        "--seconds", str(profile.open_seconds if phase == "open" else profile.saturation_seconds),
        "--warmup", str(profile.warmup_seconds), "--window", str(profile.window),
        "--backlog", str(profile.backlog), "--jobs", str(profile.bulk_jobs),
        "--batch-size", str(profile.open_batch if phase == "open" else profile.batch_size),
        "--max-jobs", str(max_jobs), *pid_args(target.pids),
    ]  # fmt: skip


def measure(profile: Profile, target: Target, work: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    try:
        found["locust"] = run_locust(
            target.control_plane, profile.locust_users, profile.locust_seconds, work, target.pids
        )
    except RuntimeError as exc:
        found["locust"] = {"failed": str(exc).splitlines()[0]}
    load_args = ["--target", target.gateway, "--streams", str(profile.worker_streams),
                 "--seconds", str(profile.worker_seconds), *pid_args(target.pids)]  # fmt: skip
    found["worker_load"] = run_driver("perf.worker_load", load_args, work / "worker_load.json", timeout=600)
    phases: dict[str, Any] = {}
    for phase, submit in E2E_PHASES:
        key = f"{phase}/{submit}"
        if phase == "bulk" and (why := target.stop_workers()) is not None:
            phases[key] = {"phase": phase, "submit": submit, "skipped": why}
            continue
        out = work / f"e2e-{phase}-{submit}.json"
        phases[key] = run_driver("perf.e2e", e2e_args(profile, phase, submit, target), out, timeout=900)
    found["end_to_end"] = phases
    return found


def settings(args: argparse.Namespace, profile: Profile, target: Target) -> dict[str, Any]:
    return {
        "profile": asdict(profile),
        "stack": "given by --target"
        if args.target
        else "started here: private Postgres (fsync on) and Redis, control plane, worker gateway, 2 schedulers",
        "workers": None if args.target else {"processes": args.workers, "concurrency": args.concurrency},
        "job_type": JOB_TYPE,
        "metrics": f"served, every process scraped each {SCRAPE_SECONDS:g}s" if args.metrics else "not served",
        "audit_level": args.audit_level,
        "measured_processes": sorted(target.pids),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    p.add_argument("--duration", type=float, help="shorten every phase to this many seconds (tiny runs)")
    p.add_argument("--jobs", type=int, help="cap every job and stream count (tiny runs)")
    add_stack_arguments(p)
    p.add_argument("--target", help="a running control plane (then also --gateway, --database-url, --redis-url)")
    p.add_argument("--gateway", help="the running stack's worker gateway")
    p.add_argument("--database-url")
    p.add_argument("--redis-url")
    p.add_argument("--pid", type=pid_arg, action="append", default=[], metavar="NAME=PID", help="given stack's process")
    p.add_argument("--out", type=Path, help="default evidence/perf/<profile>.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.target and not (args.gateway and args.database_url and args.redis_url):
        parser().error("--target needs --gateway, --database-url and --redis-url")
    profile = PROFILES[args.profile].scaled(args.duration, args.jobs)
    out = args.out or ROOT / "evidence" / "perf" / f"{args.profile}.json"
    work = Path(tempfile.mkdtemp(prefix="dispatchd-perf-"))
    started = dt.datetime.now(dt.UTC)
    at = started.isoformat(timespec="seconds")
    evidence: dict[str, Any] = {"benchmark": f"perf {args.profile}", "measured_at": at}
    evidence |= {"commit": provenance.commit(), "machine": provenance.machine(), "libraries": provenance.libraries()}
    try:
        with target_for(args, work) as target:
            evidence["servers"] = provenance.servers(target.database_url, target.redis_url)
            evidence["settings"] = settings(args, profile, target)
            with scraping(target.metrics_urls if args.metrics else []) as scrapes:
                evidence |= measure(profile, target, work)
            evidence["settings"]["metrics_scrapes"] = dict(scrapes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    evidence["wall_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(evidence, indent=2) + "\n")
    print(render(rows(evidence)))
    print(f"\nevidence: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if failed(evidence) else 0


def failed(evidence: dict[str, Any]) -> bool:
    parts = [evidence.get("locust", {}), evidence.get("worker_load", {}), *evidence.get("end_to_end", {}).values()]
    return any("failed" in part for part in parts)


if __name__ == "__main__":
    sys.exit(main())
