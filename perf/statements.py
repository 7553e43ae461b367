"""Where Postgres spends a job's time: pg_stat_statements over a saturation run, statement by statement.

    python -m perf.statements [--phase saturation] [--submit single|batch] [--seconds S]   (make perf-statements)

It starts the perf stack (perf.smoke's: control plane, gateway, two schedulers, two SDK
workers running perf.noop) on a private Postgres of its own with stock durable settings and
`pg_stat_statements` preloaded, resets the statistics just before perf.e2e's phase, and
afterwards reads every statement's calls, rows and execution time. Each statement is reported
per call and per row (a batched statement's cost per job), with the phase's throughput and
the CPU of every process, so a plan or batching regression shows up as the statement that
grew. Writes evidence/perf/statements.json.

Invariant: the figures come from this run's Postgres and drivers; the statements listed are
the ones that ran (their text normalized by Postgres, shortened), ordered by total time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from dispatchd.common import loops
from dispatchd.devtools.stack import Stack
from dispatchd.devtools.stores import PostgresInstance
from perf import provenance
from perf.drivers import run_driver
from perf.evidence import ROOT, header
from perf.profiles import PROFILES
from perf.smoke import Target, add_stack_arguments, e2e_args, topology

TOP = 15
QUERY_CHARS = 240
PRELOAD = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.max": "1000"}
TOP_STATEMENTS = """
SELECT calls, rows, total_exec_time, total_plan_time, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT $1
"""


async def reset(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def top(database_url: str, jobs: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(TOP_STATEMENTS, TOP)
    finally:
        await conn.close()
    return [
        {
            "calls": r["calls"],
            "rows_per_call": round(r["rows"] / r["calls"], 1) if r["calls"] else 0,
            "total_exec_ms": round(r["total_exec_time"], 1),
            "exec_ms_per_call": round(r["total_exec_time"] / r["calls"], 3) if r["calls"] else 0,
            "exec_ms_per_job": round(r["total_exec_time"] / jobs, 4) if jobs else None,
            "query": r["query"][:QUERY_CHARS],
        }
        for r in rows
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf.statements", description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=["saturation", "open"], default="saturation")
    p.add_argument("--submit", choices=["single", "batch"], default="single")
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke", help="phase sizes (default %(default)s)")
    p.add_argument("--seconds", type=float, help="the phase's length (default: the profile's)")
    p.add_argument("--out", type=Path, default=ROOT / "evidence/perf/statements.json")
    add_stack_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    profile = PROFILES[args.profile]
    if args.seconds:
        profile = dataclasses.replace(profile, saturation_seconds=args.seconds, open_seconds=args.seconds)
    work = Path(tempfile.mkdtemp(prefix="dispatchd-statements-"))
    postgres = PostgresInstance(work / "postgres", settings=PRELOAD)  # fsync on: stock durable settings
    evidence: dict[str, Any] = {**header("statements"), "commit": provenance.commit()}
    evidence["machine"] = provenance.machine()
    try:
        postgres.start()
        stack_topology = topology(args)
        stores = dataclasses.replace(stack_topology.stores, database_url=postgres.url)
        with Stack(dataclasses.replace(stack_topology, stores=stores), work / "stack") as stack:
            target = Target.of(stack)
            target.pids["postgres"] = postgres.pid or 0
            loops.run(reset(postgres.url))
            phase = run_driver("perf.e2e", e2e_args(profile, args.phase, args.submit, target), work / "e2e.json", 900)
            if "failed" in phase:
                print(f"the {args.phase}/{args.submit} phase failed: {phase['failed']}", file=sys.stderr)
                return 1
            jobs = phase.get("cpu_jobs") or phase["accepted"]
            evidence["servers"] = provenance.servers(postgres.url, stack.redis_url)
            evidence["phase"] = {
                "name": f"{args.phase}/{args.submit}",
                "jobs": phase["accepted"],
                "throughput": phase.get("throughput"),
                "cpu_ms_per_job": phase.get("cpu_ms_per_job"),
            }
            evidence["statements"] = loops.run(top(postgres.url, phase["accepted"]))
            evidence["note"] = (
                "exec_ms_per_job divides each statement's execution time by every job of the phase "
                f"({phase['accepted']}); the CPU figures cover the measured window's {jobs} jobs"
            )
    finally:
        postgres.destroy()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    for s in evidence["statements"]:
        calls, rows, per_call = s["calls"], s["rows_per_call"], s["exec_ms_per_call"]
        print(f"{calls:>7} calls {rows:>6} rows/call {per_call:>8} ms/call  {s['query'][:90]}")
    print(f"\nevidence: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
