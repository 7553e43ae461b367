"""`make drill-backup`: back up the live database while jobs flow, restore it, and run the platform on it.

    python -m perf.drill_backup [--jobs 400] [--seconds 6] [--out evidence/drills/backup-restore-validation.json]
                                [--platform local|kubernetes [--namespace dispatchd] [--context CTX]]

1. A stack (private Postgres and Redis, control plane, gateway, two schedulers, two workers
   whose handlers record every run in a ledger) takes a chaos workload: quick echoes, sleeps,
   flaky jobs that succeed on a retry and jobs that always fail (dead-lettered).
2. Once work is in every state (running, retried, dead-lettered) the database is backed up
   through the `Platform` interface (dispatchd.devtools.drills.backup: pg_dump -Fc of an
   exported snapshot, the manifest taken in that same snapshot); the load goes on meanwhile.
3. The stack is killed (the disaster). The dump is restored into a fresh Postgres server and
   its manifest compared with the backup's: counts AND checksums, table by table.
4. A new stack runs on the restored database with a fresh, empty Redis (the scheduler's
   repair rebuilds the ready queues from Postgres) and new workers; every job must end
   terminal, as the chaos checks and perf.restore_checks demand.

Kubernetes mode (`--platform kubernetes`, run by the kind-e2e workflow, never where
dispatchd is developed): steps 1-2 run against the deployed dev overlay instead of a local
stack. The load goes through the control plane's port-forwarded address and runs on the
cluster's workers; the backup is the same `backups.take`, with pg_dump exec'd in the
Postgres pod and the manifest taken in the same exported snapshot through a port-forward
to that pod (credentials read from the container's environment, perf.drill_target). The
cluster is left running (no disaster there); steps 3-4 are exactly as in local mode: the
dump is restored into a private Postgres server on the runner (pg_restore of the runner's
Postgres, which must be >= the cluster's major version) and a local stack recovers on it.
The cluster's workers keep no run ledger, so `successes_were_really_run` covers only runs
after the restore there (the evidence says so).

Writes evidence/drills/backup-restore-validation.json (or --out) with the `platform` it ran
on; exits 1 on any violation.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dispatchd.devtools.drills import backup as backups
from dispatchd.devtools.drills.manifest import Table, differences
from dispatchd.devtools.stack import Stack, Stores, Topology
from dispatchd.devtools.stores import PostgresInstance
from dispatchd.platform.db import create_pool
from dispatchd.platform.states import ExecutionStatus as E
from dispatchd.platform.states import JobStatus as J
from perf import drill_target, restore_checks
from perf.chaos_checks import Check, Snapshot, check_all
from perf.chaos_handlers import LEDGER_ENV, read_ledger
from perf.chaos_load import Client, Receipts, make_workload, submit_all
from perf.cluster import topology
from perf.drill_target import KUBERNETES, LOCAL, Target
from perf.evidence import ROOT, header, verdict

MIX_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 180.0
MIX = (
    f"SELECT bool_or(status = {int(E.RUNNING)}) AND bool_or(attempt > 1)"
    f" AND bool_or(status = {int(E.DEAD_LETTERED)}) FROM executions"
)


def drill_topology(ledger: Path, prefix: str, stores: Stores | None = None) -> Topology:
    base = topology(
        workers=2, concurrency=4, handlers=("--handlers", "perf.chaos_handlers:register"),
        worker_env={LEDGER_ENV: str(ledger)},
    )  # fmt: skip
    workers = (dataclasses.replace(base.workers[0], prefix=prefix),)
    return dataclasses.replace(base, stores=stores or Stores(), workers=workers)


async def until(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"backup drill: {what} within {timeout:.0f}s")
        await asyncio.sleep(0.1)


Taken = tuple[backups.Backup, Receipts, dict[str, str]]


async def backed_up_under_load(target: Target, jobs: int, seconds: float) -> Taken:
    """Run the workload; back up once it is in every state; the acknowledgements before the snapshot."""
    receipts = Receipts()
    client = Client(target.control_plane, receipts)
    pool = await create_pool(target.database_url, min_size=1, max_size=2)
    try:
        load = asyncio.create_task(submit_all(client, make_workload("backup", jobs, random.Random(12), 2.0), seconds))
        await asyncio.sleep(seconds / 2)  # a backup with history in it, not just the first jobs
        await until("running, retried and dead-lettered work", lambda: pool.fetchval(MIX), MIX_TIMEOUT)
        acknowledged = dict(receipts.acknowledged)
        taken = await backups.take(target.platform, target.database_url)
        await load
    finally:
        await pool.close()
        await client.close()
    return taken, receipts, acknowledged


async def recovered(database_url: str) -> Snapshot:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await until("every job terminal", lambda: _none_active(pool), RECOVERY_TIMEOUT)
        return await Snapshot.load(pool)
    finally:
        await pool.close()


async def _none_active(pool: Any) -> bool:
    return await Snapshot.count_active(pool) == 0


def as_json(tables: dict[str, Table]) -> dict[str, dict[str, Any]]:
    return {name: {"rows": table.rows, "md5": table.md5} for name, table in tables.items()}


def taken_locally(jobs: int, seconds: float, directory: Path) -> Taken:
    with Stack(drill_topology(directory / OLD_LEDGER, "worker"), directory / "before") as stack:
        taken = asyncio.run(backed_up_under_load(drill_target.local(stack), jobs, seconds))
        for name in stack.processes:  # the disaster: nothing shuts down cleanly
            stack.kill(name)
    return taken


def taken_in_cluster(jobs: int, seconds: float, namespace: str, context: str | None) -> Taken:
    with drill_target.kubernetes(namespace, context) as target:
        return asyncio.run(backed_up_under_load(target, jobs, seconds))


OLD_LEDGER = "runs-before.ledger"
UNLEDGERED = "successes_were_really_run"


def run(jobs: int, seconds: float, directory: Path) -> dict[str, Any]:
    return validated(LOCAL, taken_locally(jobs, seconds, directory), jobs, directory)


def run_kubernetes(jobs: int, seconds: float, directory: Path, namespace: str, context: str | None) -> dict[str, Any]:
    return validated(KUBERNETES, taken_in_cluster(jobs, seconds, namespace, context), jobs, directory)


def validated(mode: str, backed_up: Taken, jobs: int, directory: Path) -> dict[str, Any]:
    """Restore the backup, compare it, recover a local stack on it; the evidence."""
    old_ledger, new_ledger = directory / OLD_LEDGER, directory / "runs-after.ledger"
    specs = make_workload("backup", jobs, random.Random(12), 2.0)
    taken, receipts, acknowledged = backed_up
    server = PostgresInstance(directory / "restored", fast=True)
    server.start()
    try:
        restore_s = backups.restore(taken, server, directory)
        restored = asyncio.run(backups.manifest_of(server.url))
        started = time.monotonic()
        with Stack(drill_topology(new_ledger, "restored", Stores(database_url=server.url)), directory / "after"):
            snap = asyncio.run(recovered(server.url))
        recovery_s = time.monotonic() - started
    finally:
        server.destroy()
    old_runs, new_runs = read_ledger(old_ledger), read_ledger(new_ledger)
    in_backup = Receipts(acknowledged={k: v for k, v in receipts.acknowledged.items() if v in taken.snapshot_jobs})
    in_backup.conflicts = receipts.conflicts
    manifest_check = Check("manifest_counts_and_checksums_equal", differences(taken.manifest, restored))
    checks = [
        manifest_check,
        restore_checks.acknowledged_in_backup(acknowledged, taken),
        restore_checks.active_ended_terminal(taken, snap),
        restore_checks.runs_recorded(snap, new_runs),
        *check_all(specs, in_backup, snap, old_runs + new_runs),
    ]
    skipped = {}
    if mode == KUBERNETES:  # successes before the backup ran on the cluster's workers, which keep no ledger
        unledgered = next(check for check in checks if check.name == UNLEDGERED)
        checks.remove(unledgered)
        skipped[UNLEDGERED] = "the cluster's workers keep no run ledger; runs after the restore are checked by "
        skipped[UNLEDGERED] += f"restored_runs_are_recorded_attempts ({len(unledgered.violations)} unbacked)"
    return {
        **header("backup-restore-validation"),
        "platform": mode,
        "method": "pg_dump -Fc --snapshot=<exported snapshot>; manifest (row count + md5 of rows in primary-key "
        "order, per table) computed in the same REPEATABLE READ snapshot; pg_restore into a fresh server",
        "backup": {
            "seconds": round(taken.seconds, 3),
            "bytes": len(taken.dump),
            "jobs_in_backup": len(taken.snapshot_jobs),
            "jobs_active_in_backup": len(taken.active_jobs),
            "acknowledged_before_snapshot": len(acknowledged),
            "acknowledged_after_snapshot_not_in_backup": len(receipts.acknowledged) - len(in_backup.acknowledged),
        },
        "manifest": {"backed_up": as_json(taken.manifest), "restored": as_json(restored)},
        "restore_seconds": round(restore_s, 3),
        "recovery": {
            "platform_on_restored_db": "fresh Redis, new workers; scheduler repair rebuilds the ready queues",
            "seconds_until_all_terminal": round(recovery_s, 3),
            "outcomes": dict(Counter(J(job["status"]).name for job in snap.jobs.values())),
            "handler_runs_after_restore": sum(e.event == "start" for e in new_runs),
            "redone_after_restore": restore_checks.redone(old_runs, new_runs, taken),
        },
        "checks": {check.name: check.as_dict() for check in checks},
        **({"checks_not_applicable": skipped} if skipped else {}),
        "passed": all(not check.violations for check in checks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=6.0, help="the workload's submit window")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "drills" / "backup-restore-validation.json")
    drill_target.add_arguments(parser)
    args = parser.parse_args(argv)
    mode = drill_target.platform_of(args)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-drill-backup-"))
    try:
        if mode == KUBERNETES:
            evidence = run_kubernetes(args.jobs, args.seconds, directory, args.namespace, args.context)
        else:
            evidence = run(args.jobs, args.seconds, directory)
    except BaseException:
        print(f"drill failed; logs kept in {directory}", file=sys.stderr)
        raise
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    return verdict(evidence, directory, "backup")


if __name__ == "__main__":
    sys.exit(main())
