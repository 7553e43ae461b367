"""`make drill-region`: fail a region over to a live streaming replica and back, measured.

    python -m perf.region_drill [--tiny] [--out evidence/drills/region-failover.json]

Region A: a private Postgres, its own Redis, control plane, gateway, scheduler, a worker.
Region B: a real streaming replica of A's Postgres (pg_basebackup -R, as the postgres user),
its own Redis, its services passive against the replica (reads served, writes and worker
streams refused naming region A — each checked). Under load (submitters recording every
acknowledged job): SIGKILL A's Postgres and services, run scripts/promote-region.sh for B
(fence A — here it is unreachable —, pg_promote, record B with a new region epoch, switch
the overlays), restart B's services active; clients move to B. RTO = last ack by A -> first
ack by B; RPO = jobs acknowledged by A and missing in B. Replication is asynchronous there.
Then A is rebuilt as B's replica with a fresh pg_basebackup (A's diverged data thrown away:
no wal_log_hints/checksums, so no pg_rewind; the database is small), A's services come back
with their old active configuration and must refuse writes (the database names B); the cost
of synchronous replication is measured on B (short run each way); and with synchronous
replication on, the drill fails back to A (kill B, promote A): RPO must be 0.

Exits non-zero if a passive region accepted a write, RPO > 0 with synchronous replication,
RTO > 10 s, or an acknowledged job (other than the measured asynchronous RPO) is missing or
never finishes. `--tiny` (the e2e test) does only the first failover, synchronous, without workers.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from dispatchd.devtools.stack import CONTROL_PLANE, GATEWAY, Stack, Stores, Topology, Workers, free_listen
from dispatchd.devtools.stores import PostgresInstance, RedisInstance, ReplicaInstance
from dispatchd.devtools.stores.replica import synchronous, wait_streaming
from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.migrate import upgrade
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from dispatchd.v1 import worker_service_pb2 as wpb
from dispatchd.v1 import worker_service_pb2_grpc as wpb_grpc
from perf.chaos_load import CHANNEL_OPTIONS
from perf.evidence import ROOT, header
from perf.region_load import Load, latency_summary, run_for

RTO_TARGET = 10.0
TERMINAL = (4, 5, 6)  # JobStatus succeeded, failed, canceled


def say(message: str) -> None:
    print(f"region-drill: {message}", file=sys.stderr, flush=True)


@dataclass
class Site:
    """One region: its database, its Redis, its services (a Stack on given stores) at fixed addresses."""

    name: str
    directory: Path
    pg: PostgresInstance
    redis: RedisInstance
    listen: dict[str, str] = field(default_factory=lambda: {CONTROL_PLANE: free_listen(), GATEWAY: free_listen()})
    stack: Stack | None = None

    @property
    def target(self) -> str:
        return self.listen[CONTROL_PLANE]

    def services(self, primary: str, *, active: bool, workers: int) -> Stack:
        """Start this region's services (stopping any running ones) with this configuration."""
        self.stop_services()
        settings = {
            "DISPATCHD_REGION": self.name,
            "DISPATCHD_PRIMARY_REGION": primary,
            "DISPATCHD_ALLOW_MUTATIONS": str(active).lower(),
            "DISPATCHD_LOG_JSON": "false",
            "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "1",
        }
        topology = Topology(
            schedulers=1,
            workers=(Workers(count=workers),) if workers else (),
            stores=Stores(database_url=self.pg.url, redis_url=self.redis.url, migrate=False),
            metrics=False,
            listen=self.listen,
            settings=settings,
        )
        self.stack = Stack(topology, self.directory / f"services-{time.monotonic_ns()}", say=say)
        self.stack.__enter__()
        return self.stack

    def stop_services(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    def kill(self) -> None:
        """Region down hard: SIGKILL every service and worker, then Postgres."""
        if self.stack is not None:
            for name in list(self.stack.processes):
                self.stack.kill(name)
        self.pg.kill()


def promote(site: Site, old: PostgresInstance, overlays: Path) -> str:
    """The scripted promotion procedure, against `site`'s database, with `old` as the old primary."""
    env = {**os.environ, "PATH": f"{site.pg.bin_dir}{os.pathsep}{os.environ['PATH']}"}
    argv = ["bash", str(ROOT / "scripts" / "promote-region.sh"), site.name, "--database-url", site.pg.url,
            "--old-database-url", old.url, str(overlays)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"promote-region.sh failed: {done.stderr}{done.stdout}")
    return done.stdout


async def passive_checks(site: Site, job_id: str, primary: str) -> dict[str, Any]:
    """What a passive region must do: serve reads, refuse writes and worker streams naming `primary`."""
    assert site.stack is not None
    found: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(site.target, options=CHANNEL_OPTIONS) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        deadline = time.monotonic() + 10
        while True:  # the job reaches the replica asynchronously
            try:
                got = await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=2)
                found["read_served"] = got.job.job_id == job_id
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    found["read_served"] = False
                    break
                await asyncio.sleep(0.1)
        try:
            await jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="builtin.echo"), timeout=5)
            found["write_refused"] = False
        except grpc.RpcError as exc:
            found["write_refused"] = exc.code() == grpc.StatusCode.FAILED_PRECONDITION and repr(primary) in (
                exc.details() or ""
            )
            found["write_refusal"] = exc.details()
    async with grpc.aio.insecure_channel(site.stack.gateway_target, options=CHANNEL_OPTIONS) as channel:
        call: Any = wpb_grpc.WorkerServiceStub(channel).Connect()  # type: ignore[call-arg]
        register = wpb.WorkerRegistration(worker_id="drill", capabilities=["builtin"])
        await call.write(wpb.ConnectRequest(registration=register))
        try:
            await asyncio.wait_for(call.read(), 5)
            found["worker_stream_refused"] = False
        except grpc.RpcError as exc:
            found["worker_stream_refused"] = exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    return found


async def present(url: str, job_ids: list[str]) -> dict[str, int]:
    """job id -> status, for the ids `url`'s database has."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        rows = await conn.fetch("SELECT job_id::text, status FROM jobs WHERE job_id::text = ANY($1)", job_ids)
    finally:
        await conn.close()
    return {r["job_id"]: r["status"] for r in rows}


async def failover(load: Load, old: Site, new: Site, overlays: Path, *, restart: bool, workers: int) -> dict[str, Any]:
    """Kill `old` under `load`, promote `new`, switch it active; RTO and RPO of that."""
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await asyncio.sleep(3)
    assert load.by(old.name), f"{old.name} acknowledged nothing before the failover: {load.refusals}"
    killed_at = time.monotonic()
    old.kill()
    say(f"{old.name} killed; promoting {new.name}")
    script = await asyncio.to_thread(promote, new, old.pg, overlays)
    promoted_at = time.monotonic()
    if restart:  # passive by configuration: switch it active (what syncing the edited overlay does)
        await asyncio.to_thread(new.services, new.name, active=True, workers=workers)
    elif workers and new.stack is not None:
        for i in range(workers):
            new.stack.add_worker(f"{new.name}-worker-{i + 1}", group=Workers())
    deadline = time.monotonic() + 60
    while not load.by(new.name) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the submitters' record
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    stop.set()
    await running
    by_old, by_new = load.by(old.name), load.by(new.name)
    last_old = max(a.at for a in by_old)
    first_new = min((a.at for a in by_new), default=float("nan"))
    acked_by_old = [a.job_id for a in by_old]
    missing = sorted(set(acked_by_old) - set(await present(new.pg.url, acked_by_old)))
    return {
        "from": old.name,
        "to": new.name,
        "services_restarted": restart,
        "acknowledged_by_old": len(by_old),
        "acknowledged_by_new": len(by_new),
        "rto_seconds": round(first_new - last_old, 3),
        "kill_to_first_write_seconds": round(first_new - killed_at, 3),
        "promotion_procedure_seconds": round(promoted_at - killed_at, 3),
        "rpo_jobs": len(missing),
        "missing_job_ids": missing[:50],
        "refusals": load.refusals,
        "procedure_output": script.splitlines(),
    }


async def drill(tiny: bool, directory: Path, overlays: Path) -> tuple[dict[str, Any], list[str]]:
    failures: list[str] = []
    workers = 0 if tiny else 1
    a_pg = PostgresInstance(directory / "a-pg", fast=tiny)
    a = Site("region-a", directory / "a", a_pg, RedisInstance(directory / "a-redis"))
    b_pg = ReplicaInstance(directory / "b-pg", a_pg, "region-b", fast=tiny)
    b = Site("region-b", directory / "b", b_pg, RedisInstance(directory / "b-redis"))
    sites = [a, b]
    result: dict[str, Any] = {"replication": "streaming, pg_basebackup -R, application_name = region name"}
    try:
        for site in sites:
            site.redis.start()
        a_pg.start()
        await asyncio.to_thread(upgrade, a_pg.url)
        a_pg.psql("SELECT dispatchd_promote_region('region-a')", "dispatchd")
        b_pg.start()
        wait_streaming(a_pg, "region-b", "async")
        await asyncio.to_thread(a.services, "region-a", active=True, workers=workers)
        await asyncio.to_thread(b.services, "region-a", active=False, workers=0)
        seed = (await run_for(Load({a.name: a.target}, concurrency=1), 0.5)).acks[0].job_id
        result["passive_region_b"] = checks = await passive_checks(b, seed, "region-a")
        failures += [f"passive region B: {k} is false" for k, v in checks.items() if v is False]

        if tiny:  # synchronous from the start: its RPO must be 0, so the e2e test can insist on it
            synchronous(a_pg, "region-b")
            load = Load({a.name: a.target, b.name: b.target})
            result["failover_sync"] = first = await failover(load, a, b, overlays, restart=True, workers=0)
            return result, failures + rto_failures(first) + rpo_failures(first)
        load = Load({a.name: a.target, b.name: b.target})
        result["failover_async"] = first = await failover(load, a, b, overlays, restart=True, workers=workers)
        lost_async = set(first["missing_job_ids"])

        # A comes back as B's replica (fresh base backup on A's port), its services still configured active.
        a.pg = ReplicaInstance(a_pg.requested_data_dir, b.pg, "region-a", port=a_pg.port)
        await asyncio.to_thread(a.pg.rebuild)
        wait_streaming(b.pg, "region-a", "async")
        await asyncio.to_thread(a.services, "region-a", active=True, workers=0)
        await asyncio.sleep(1.5)  # a region fence refresh
        result["old_primary_rebuilt"] = checks = await passive_checks(a, first_id(load, b.name), "region-b")
        failures += [f"rebuilt region A: {k} is false" for k, v in checks.items() if v is False]

        cost = {"async": latency_summary((await run_for(Load({b.name: b.target}), 5)).acks, 5)}
        synchronous(b.pg, "region-a")
        cost["sync"] = latency_summary((await run_for(Load({b.name: b.target}), 5)).acks, 5)
        result["synchronous_replication_cost"] = cost

        load = Load({b.name: b.target, a.name: a.target})
        result["failback_sync"] = back = await failover(load, b, a, overlays, restart=False, workers=1)
        failures += rto_failures(first) + rto_failures(back) + rpo_failures(back)
        failures += await lost_jobs(a.pg.url, [x.job_id for x in load.acks], lost_async, result)
        return result, failures
    finally:
        for site in sites:
            site.stop_services()
            site.redis.stop()
        for pg in {a.pg, a_pg, b_pg}:
            pg.destroy()


def first_id(load: Load, region: str) -> str:
    return load.by(region)[0].job_id


def rto_failures(phase: dict[str, Any]) -> list[str]:
    rto = phase["rto_seconds"]
    return [] if not math.isnan(rto) and rto <= RTO_TARGET else [f"RTO {rto}s from {phase['from']} over {RTO_TARGET}s"]


def rpo_failures(phase: dict[str, Any]) -> list[str]:
    """With synchronous replication nothing acknowledged may be missing."""
    return [f"RPO {phase['rpo_jobs']} job(s) with synchronous replication"] if phase["rpo_jobs"] else []


async def lost_jobs(url: str, acked: list[str], lost_async: set[str], result: dict[str, Any]) -> list[str]:
    """Every job acknowledged in the last phase ends terminal in the final primary."""
    wanted = [j for j in acked if j not in lost_async]
    deadline = time.monotonic() + 90
    while True:
        statuses = await present(url, wanted)
        open_jobs = [j for j in wanted if statuses.get(j) not in TERMINAL]
        if not open_jobs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    missing = [j for j in wanted if j not in statuses]
    result["final"] = {"acknowledged": len(wanted), "missing": len(missing), "not_terminal": len(open_jobs)}
    return [f"{len(open_jobs)} acknowledged job(s) missing or unfinished in the final primary"] if open_jobs else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one failover, no workers (the e2e test)")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "drills" / "region-failover.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="region-drill-") as tmp:
        overlays = Path(tmp) / "deploy"
        shutil.copytree(ROOT / "deploy", overlays)  # the procedure edits a copy, not the checkout
        result, failures = asyncio.run(drill(args.tiny, Path(tmp), overlays / "overlays"))
    evidence = {**header("region-failover"), "tiny": args.tiny, "rto_target_seconds": RTO_TARGET, **result,
                "failures": failures, "ok": not failures}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    say(f"wrote {args.out}: {failures or 'ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
