"""`make perf-tracing-cost`: what tracing costs end to end, measured, tracing off against on.

    python -m perf.tracing_cost [--rounds 3] [--seconds 12] [--sampling RATIO] [--out FILE]

Each trial starts a fresh stack exactly as `make perf-smoke` does (durable Postgres, Redis,
the services, two SDK workers loading `perf.noop`, metrics served and scraped, audit on) and
runs the harness's saturation phase with single SubmitJob calls pipelined from one client.
Trials alternate off and on, `--rounds` of each, so a drift of the machine hits both sides
alike. "On" points every process at a counting OTLP sink (`perf.trace_sink`) with the
default sampler (or `--sampling`); the spans it received are recorded, so a run that traced
nothing cannot pass for a cheap one.

Writes evidence/perf/tracing-cost.json: every trial's jobs/s and CPU per job per process,
the medians, and the throughput drop with tracing on; exits non-zero when the drop exceeds
the budget (`--budget`, 5 % by default) or no span arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from dispatchd.devtools.stack import Stack
from perf import provenance
from perf.drivers import run_driver
from perf.evidence import ROOT
from perf.profiles import PROFILES, Profile
from perf.scrape import scraping
from perf.smoke import Target, add_stack_arguments, e2e_args, topology
from perf.trace_sink import sink


def trial(args: argparse.Namespace, profile: Profile, tracing: bool, work: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as scope:
        settings: dict[str, str] = {}
        receiver = None
        if tracing:
            receiver, endpoint = scope.enter_context(sink())
            settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
            if args.sampling is not None:
                settings |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                             "OTEL_TRACES_SAMPLER_ARG": str(args.sampling)}  # fmt: skip
        base = topology(args)
        topo = dataclasses.replace(base, settings={**base.settings, **settings})
        with Stack(topo, work / "stack", say=lambda text: print(f"[stack] {text}", file=sys.stderr)) as stack:
            target = Target.of(stack)
            with scraping(target.metrics_urls if args.metrics else []):
                phase = run_driver(
                    "perf.e2e", e2e_args(profile, "saturation", "single", target), work / "e2e.json", timeout=900
                )
        # Counted after the stack stopped: every process flushes its spans on the way out.
        spans = receiver.spans() if receiver is not None else {}
    if "failed" in phase:
        raise RuntimeError(f"the saturation run failed: {phase['failed']}")
    return {
        "tracing": tracing,
        "jobs_per_second": phase["throughput"]["jobs_per_second"],
        "cpu_ms_per_job": phase["cpu_ms_per_job"],
        "errors": phase.get("errors", {}),
        "spans_received": spans,
    }


def verdict(trials: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    off = [t["jobs_per_second"] for t in trials if not t["tracing"]]
    on = [t["jobs_per_second"] for t in trials if t["tracing"]]
    off_median, on_median = statistics.median(off), statistics.median(on)
    drop = (off_median - on_median) / off_median * 100
    spans = sum(sum(t["spans_received"].values()) for t in trials if t["tracing"])
    return {
        "jobs_per_second_off_median": off_median,
        "jobs_per_second_on_median": on_median,
        "throughput_drop_percent": round(drop, 2),
        "budget_percent": budget,
        "spans_received_with_tracing_on": spans,
        "within_budget": drop <= budget and spans > 0,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="trials of each side (default %(default)s)")
    p.add_argument("--seconds", type=float, default=12.0, help="saturation run per trial (default %(default)s)")
    p.add_argument("--sampling", type=float, help="ratio of new traces recorded (default: the platform's)")
    p.add_argument("--budget", type=float, default=5.0, help="allowed throughput drop, percent")
    add_stack_arguments(p)
    p.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "tracing-cost.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    profile = PROFILES["smoke"].scaled(args.seconds)
    started = dt.datetime.now(dt.UTC)
    evidence: dict[str, Any] = {"benchmark": "tracing cost", "measured_at": started.isoformat(timespec="seconds")}
    evidence |= {"commit": provenance.commit(), "machine": provenance.machine(), "libraries": provenance.libraries()}
    evidence["settings"] = {
        "phase": "saturation, single SubmitJob calls pipelined from one client",
        "profile": dataclasses.asdict(profile),
        "rounds": args.rounds,
        "sampling": "platform default" if args.sampling is None else args.sampling,
        "workers": {"processes": args.workers, "concurrency": args.concurrency},
        "metrics": args.metrics,
        "audit_level": args.audit_level,
    }
    trials = []
    for index in range(2 * args.rounds):
        work = Path(tempfile.mkdtemp(prefix="dispatchd-tracing-cost-"))
        try:
            trials.append(trial(args, profile, tracing=index % 2 == 1, work=work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        last = trials[-1]
        print(f"[tracing-cost] tracing {'on ' if last['tracing'] else 'off'}: {last['jobs_per_second']} jobs/s")
    evidence["trials"] = trials
    evidence["result"] = verdict(trials, args.budget)
    evidence["wall_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    print(json.dumps(evidence["result"], indent=2))
    return 0 if evidence["result"]["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
