"""`make perf-compare`: the same end-to-end workload through Celery 5 and through dispatchd, in one run.

Workload on each side, same machine, same co-location (broker/stores, workers and the one
driver process all on this host): no-op task/job; an open-loop run at the profile's rate
(submit -> handler done, submit -> result recorded), a saturation run of exactly
`compare_jobs` jobs (completions per second after the warmup), and bulk enqueue of
`bulk_jobs` with no worker. Celery: Redis broker and result backend, acks_late, prefork x2,
in its own virtualenv (perf.celery_side). dispatchd: the perf-smoke stack (durable
Postgres), single SubmitJob calls and BatchSubmitJobs. Writes evidence/perf/compare.json
with both sides and dispatchd/Celery ratios, and prints them as one table. Invariant: the
ratios are computed from the two sides' figures in that file, nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dispatchd.devtools.stack import Stack
from perf import celery_side, provenance
from perf.drivers import pid_args, run_driver
from perf.evidence import ROOT
from perf.profiles import PROFILES, Profile
from perf.smoke import E2E_PHASES, Target, add_stack_arguments, e2e_args, topology
from perf.summary import render

CELERY_PHASES = ("open", "saturation", "bulk")
# (label, path into a phase's figures, dispatchd phase key, higher is better)
FIGURES = (
    ("open loop: submit -> handler done p50 ms", ("submit_to_handler_done_ms", "p50"), "open/single", False),
    ("open loop: submit -> handler done p99 ms", ("submit_to_handler_done_ms", "p99"), "open/single", False),
    ("open loop: submit -> recorded p50 ms", ("submit_to_recorded_ms", "p50"), "open/single", False),
    ("open loop: submit -> recorded p99 ms", ("submit_to_recorded_ms", "p99"), "open/single", False),
    ("saturation jobs/s (single submit)", ("throughput", "jobs_per_second"), "saturation/single", True),
    ("saturation jobs/s (batch submit)", ("throughput", "jobs_per_second"), "saturation/batch", True),
    ("bulk enqueue jobs/s (batch submit)", ("accepted_per_second",), "bulk/batch", True),
    ("saturation CPU ms/job, all processes (single submit)", ("cpu_ms_per_job", "*"), "saturation/single", False),
)


def dig(figures: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    """The figure at `path`; a last key "*" sums the mapping it names (CPU of every process)."""
    value: Any = figures
    for key in path:
        if key == "*" and isinstance(value, Mapping):
            return round(sum(float(v) for v in value.values()), 3) if value else None
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def celery_phase(phase: str) -> str:
    return phase.split("/", maxsplit=1)[0]


def ratios(celery: Mapping[str, Any], ours: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: both values and dispatchd / Celery (None where either side lacks it)."""
    found = []
    for label, path, key, higher_better in FIGURES:
        theirs = dig(celery.get(celery_phase(key), {}), path)
        mine = dig(ours.get(key, {}), path)
        ratio = round(mine / theirs, 2) if mine is not None and theirs else None
        found.append({"figure": label, "celery": theirs, "dispatchd": mine, "dispatchd_over_celery": ratio,
                      "higher_is_better": higher_better})  # fmt: skip
    return found


def celery_args(profile: Profile, phase: str, pids: Mapping[str, int]) -> list[str]:
    return [
        "--phase", phase, "--window", "1", "--rate", str(profile.open_rate),
        "--seconds", str(profile.open_seconds if phase == "open" else 600), "--warmup", str(profile.warmup_seconds),
        "--backlog", str(profile.backlog), "--jobs", str(profile.bulk_jobs), "--max-jobs", str(profile.compare_jobs),
        *pid_args(pids),
    ]  # fmt: skip


def run_celery(profile: Profile, work: Path) -> dict[str, Any]:
    python = celery_side.ensure_venv()
    found: dict[str, Any] = {}
    with celery_side.celery_stack(work) as stack:
        env = {"PERF_CELERY_REDIS": stack.redis_url}
        found["versions"] = run_driver("perf.celery_driver", ["--phase", "open", "--ping"], work / "celery-ping.json",
                                       timeout=120, python=python, env=env)  # fmt: skip
        for phase in CELERY_PHASES:
            if phase == "bulk":
                stack.worker.stop()
            pids = stack.pids() if stack.worker.is_running() else {"redis": stack.pids()["redis"]}
            out = work / f"celery-{phase}.json"
            found[phase] = run_driver("perf.celery_driver", celery_args(profile, phase, pids), out,
                                      timeout=900, python=python, env=env)  # fmt: skip
    return found


def run_dispatchd(args: argparse.Namespace, profile: Profile, work: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with Stack(topology(args), work / "stack", say=lambda text: print(f"[stack] {text}", file=sys.stderr)) as stack:
        target = Target.of(stack)
        found["servers"] = provenance.servers(target.database_url, target.redis_url)
        for phase, submit in E2E_PHASES:
            if phase == "bulk":
                target.stop_workers()
            # A saturation run ends at compare_jobs jobs (as Celery's does), not at a time.
            sized = dataclasses.replace(profile, saturation_seconds=600) if phase == "saturation" else profile
            argv = e2e_args(sized, phase, submit, target, max_jobs=profile.compare_jobs)
            found[f"{phase}/{submit}"] = run_driver("perf.e2e", argv, work / f"e2e-{phase}-{submit}.json", timeout=900)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    p.add_argument("--duration", type=float, help="shorten every phase to this many seconds (tiny runs)")
    p.add_argument("--jobs", type=int, help="cap every job count (tiny runs)")
    add_stack_arguments(p)
    p.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "compare.json")
    args = p.parse_args(argv)
    profile = PROFILES[args.profile].scaled(args.duration, args.jobs)
    work = Path(tempfile.mkdtemp(prefix="dispatchd-compare-"))
    evidence: dict[str, Any] = {
        "benchmark": "perf compare",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "libraries": provenance.libraries(),
        "settings": {
            "profile": dataclasses.asdict(profile),
            "celery": {"requirement": celery_side.CELERY_REQUIREMENT, "pool": celery_side.POOL,
                       "concurrency": celery_side.CONCURRENCY, "acks_late": True,
                       "broker": "redis", "result_backend": "redis"},
            "dispatchd": {"workers": args.workers, "concurrency": args.concurrency, "metrics": args.metrics,
                          "audit_level": args.audit_level, "postgres": "fsync on"},
        },
    }  # fmt: skip
    try:
        evidence["celery"] = run_celery(profile, work)
        evidence["dispatchd"] = run_dispatchd(args, profile, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    evidence["ratios"] = ratios(evidence["celery"], evidence["dispatchd"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    table = [(r["figure"], *(_cell(r[k]) for k in ("celery", "dispatchd", "dispatchd_over_celery")))
             for r in evidence["ratios"]]  # fmt: skip
    print(render(table, ("figure", "Celery 5", "dispatchd", "dispatchd / Celery")))
    print(f"\nevidence: {args.out}")
    sides = [*evidence["celery"].values(), *evidence["dispatchd"].values()]
    return 1 if any("failed" in side for side in sides) else 0


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


if __name__ == "__main__":
    sys.exit(main())
