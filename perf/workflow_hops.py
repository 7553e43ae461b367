"""`make perf-workflow`: step-to-step latency of a 10-step workflow sequence, per hop.

    python -m perf.workflow_hops [--runs 30] [--steps 10] [--fast-postgres] [--out FILE]

Starts a stack as `make perf-smoke` does (private Postgres with fsync on, Redis, control
plane, gateway, two schedulers) with one SDK worker running the builtins, registers a
sequence of `--steps` `builtin.echo` steps, and starts `--runs` runs one after another (a
latency measurement, not a throughput one), waiting for each run's last step with WaitJob.
A hop is from the moment Postgres recorded step i's success (its execution's finished_at,
set in the gateway's settle transaction, which also releases step i+1) to the claim of step
i+1's execution (claimed_at): the release, the Redis push, the gateway's pop and claim. Both
instants are read from the database clock, so no two clocks are compared.

Writes evidence/perf/workflow-hops.json (the commit it measured, p50/p99 of every hop index
and of all hops together, and whether the overall p50 meets the 5 ms target); exits 1 when it
does not or a run did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from dispatchd.client import Client, JobStatus
from dispatchd.devtools.stack import Stack, Stores, Topology, Workers
from dispatchd.platform.db import asyncpg_dsn
from perf import provenance
from perf.evidence import ROOT
from perf.stats import summary_ms

TARGET_P50_MS = 5.0
NAME = "perf.sequence"

_HOPS = """
SELECT s.run_id, s.position, e.claimed_at, e.finished_at
FROM workflow_steps s JOIN executions e ON e.job_id = s.job_id
WHERE s.run_id = ANY($1::uuid[]) ORDER BY s.run_id, s.position
"""


def sequence(steps: int) -> dict[str, Any]:
    """Step i+1 depends on step i; each echoes a fixed payload (no template work to measure)."""
    return {
        "name": NAME,
        "steps": [
            {
                "id": f"s{i}",
                "job_type": "builtin.echo",
                "payload": {"i": i},
                **({"depends_on": [f"s{i - 1}"]} if i else {}),
            }
            for i in range(steps)
        ],
    }


def run_all(stack: Stack, runs: int, steps: int) -> list[str]:
    with Client(stack.control_plane_target) as client:
        client.register_workflow(sequence(steps))
        ids = []
        for _ in range(runs):
            run, _ = client.start_workflow(NAME)
            last = client.wait(run.steps[-1].job_id, timeout=dt.timedelta(seconds=60))
            if last.status is not JobStatus.SUCCEEDED:
                raise SystemExit(f"run {run.run_id}: its last step is {last.status.name}")
            ids.append(run.run_id)
        return ids


async def hops(database_url: str, run_ids: list[str]) -> dict[int, list[float]]:
    """Seconds from step i's success to step i+1's claim, by hop index (1-based)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(_HOPS, run_ids)
    finally:
        await conn.close()
    by_hop: dict[int, list[float]] = {}
    previous: asyncpg.Record | None = None
    for row in rows:
        if previous is not None and previous["run_id"] == row["run_id"]:
            gap = (row["claimed_at"] - previous["finished_at"]).total_seconds()
            by_hop.setdefault(row["position"] - 1, []).append(gap)
        previous = row
    return by_hop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="runs, one after another (default %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="steps in the sequence (default %(default)s)")
    p.add_argument("--fast-postgres", action="store_true", help="fsync off (default: stock durable settings)")
    p.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "workflow-hops.json")
    args = p.parse_args(argv)
    topology = Topology(
        workers=(Workers(1, ("--builtins",), concurrency=4),),
        stores=Stores(fast_postgres=args.fast_postgres),
        settings={"DISPATCHD_LOG_LEVEL": "WARNING"},
    )
    started = dt.datetime.now(dt.UTC)
    with (
        tempfile.TemporaryDirectory(prefix="dispatchd-wf-perf-") as work,
        Stack(topology, Path(work), say=lambda text: print(f"[stack] {text}", file=sys.stderr)) as stack,
    ):
        run_ids = run_all(stack, 1, args.steps)  # warm-up: connections, prepared statements
        run_ids = run_all(stack, args.runs, args.steps)
        by_hop = asyncio.run(hops(stack.database_url, run_ids))
        servers = provenance.servers(stack.database_url, stack.redis_url)
    everything = [gap for gaps in by_hop.values() for gap in gaps]
    overall = summary_ms(everything)
    evidence = {
        "benchmark": "workflow step-to-step latency",
        "measured_at": started.isoformat(timespec="seconds"),
        "commit": provenance.commit(),
        "machine": provenance.machine(),
        "servers": servers,
        "settings": {
            "runs": args.runs,
            "steps": args.steps,
            "postgres": "fsync off" if args.fast_postgres else "stock durable settings (fsync on)",
            "hop": "step i's execution finished_at (settle + release commit) -> step i+1's claimed_at",
        },
        "hops": {str(hop): summary_ms(gaps) for hop, gaps in sorted(by_hop.items())},
        "overall": overall,
        "target_p50_ms": TARGET_P50_MS,
        "passed": bool(everything) and float(overall["p50"]) <= TARGET_P50_MS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    print(json.dumps({"overall": overall, "passed": evidence["passed"]}, indent=2))
    return 0 if evidence["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
