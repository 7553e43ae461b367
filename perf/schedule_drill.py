"""`make drill-schedule`: a schedule firing every second across a scheduler leader SIGKILL.

    python -m perf.schedule_drill [--seconds 60] [--kill-after 20] [--out evidence/drills/schedule-failover.json]

One stack (private Postgres and Redis, control plane, worker gateway, two schedulers, no
workers) as separate processes. A schedule firing every second (an interval, catch-up ALL)
is created through the client; `--kill-after` seconds later the scheduler holding the leader
lease is SIGKILLed (and restarted, to stand by), and at `--seconds` the schedule is paused.
Then Postgres is counted: every fire time between the first and the last must have exactly
one fire row (none missed, none doubled) and exactly one job (none doubled, none without its
fire). Also measured: kill -> the standby's token in the lease key, and kill -> the first fire
recorded after it (the takeover gap), and each fire's delay after its fire time.

`measure` is shared with the end-to-end test (tests/e2e/test_schedule_failover.py), which
runs it for ~10 s on the test's stack; the evidence file is written by this command only.
"""

from __future__ import annotations

import os

# Processes are (re)started from here with fork+exec; gRPC's fork handlers must stay off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import datetime as dt
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from dispatchd.client import AsyncClient
from dispatchd.common import loops
from dispatchd.devtools.stack import Stack, Stores, Topology
from dispatchd.platform.config import Settings
from dispatchd.platform.queues import Keys
from perf.evidence import ROOT, header, verdict

NAME = "drill.every-second"
JOB_TYPE = "drill.scheduled"
PERIOD = dt.timedelta(seconds=1)
POLL = 0.02
TAKEOVER_TIMEOUT = 30.0


async def _leader_token(redis: aioredis.Redis, keys: Keys) -> str | None:
    value = await redis.get(keys.leader)
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def _holder(stack: Stack, token: str) -> str:
    """The scheduler process that logged `token` as its lease token."""
    for name in stack.schedulers:
        if token in stack.processes[name].log_path.read_text(errors="replace"):
            return name
    raise RuntimeError(f"no scheduler logged the leader token {token}")


async def _takeover(stack: Stack, redis: aioredis.Redis, keys: Keys, pool: asyncpg.Pool) -> dict[str, Any]:
    """SIGKILL the leader; wait for the standby to hold the lease; restart the killed one."""
    token = await _leader_token(redis, keys)
    assert token is not None, "no scheduler leads"
    leader = _holder(stack, token)
    killed_at: dt.datetime = await pool.fetchval("SELECT clock_timestamp()")
    started = time.monotonic()
    stack.processes[leader].kill()
    deadline = started + TAKEOVER_TIMEOUT
    while True:
        successor = await _leader_token(redis, keys)
        if successor not in (None, token):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no standby took the lease within {TAKEOVER_TIMEOUT} s")
        await asyncio.sleep(POLL)
    assert successor is not None
    lease_s = time.monotonic() - started
    await asyncio.to_thread(stack.processes[leader].restart)
    return {"killed": leader, "successor": _holder(stack, successor), "killed_at": killed_at,
            "lease_takeover_s": round(lease_s, 3)}


async def _count(pool: asyncpg.Pool, killed_at: dt.datetime) -> dict[str, Any]:
    fires = await pool.fetch(
        "SELECT f.fire_time, f.fired_at, f.job_id FROM schedule_fires f JOIN schedules s USING (schedule_id)"
        " WHERE s.name = $1 ORDER BY f.fire_time", NAME)
    jobs = await pool.fetch("SELECT metadata->>'dispatchd.fire_time' AS fire_time FROM jobs"
                            " WHERE metadata->>'dispatchd.schedule' = $1", NAME)
    times = [r["fire_time"] for r in fires]
    expected = (times[-1] - times[0]) // PERIOD + 1 if times else 0
    per_time = Counter(dt.datetime.fromisoformat(r["fire_time"]) for r in jobs)
    after_kill = [r["fired_at"] for r in fires if r["fired_at"] > killed_at]
    delays = sorted((r["fired_at"] - r["fire_time"]).total_seconds() for r in fires)
    return {
        "fires_expected": expected,
        "fires_recorded": len(times),
        "fires_missed": expected - len(set(times)),
        "fires_doubled": len(times) - len(set(times)),
        "jobs": len(jobs),
        "jobs_doubled": sum(n - 1 for n in per_time.values() if n > 1),
        "fires_without_job": sum(1 for r in fires if r["job_id"] is None) + len(set(times) - set(per_time)),
        "jobs_without_fire": len(set(per_time) - set(times)),
        "off_grid": sum(1 for a, b in itertools.pairwise(times) if (b - a) % PERIOD),
        "first_fire_after_kill_s": round((min(after_kill) - killed_at).total_seconds(), 3) if after_kill else None,
        "fire_delay_s": {"p50": delays[len(delays) // 2], "max": delays[-1]} if delays else None,
    }


async def measure(stack: Stack, *, seconds: float, kill_after: float) -> dict[str, Any]:
    """Run the drill on a started stack (two schedulers); returns the counts and a verdict."""
    keys = Keys(stack.topology.redis_prefix or Settings().redis_prefix)
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    redis = aioredis.from_url(stack.redis_url)
    try:
        async with AsyncClient(stack.control_plane_target, security=stack.client_security()) as client:
            await client.put_schedule(NAME, JOB_TYPE, interval=PERIOD, catch_up="all", catch_up_limit=1000)
            started = time.monotonic()
            await asyncio.sleep(kill_after)
            takeover = await _takeover(stack, redis, keys, pool)
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
            await client.pause_schedule(NAME)
        counts = await _count(pool, takeover["killed_at"])
    finally:
        await pool.close()
        await redis.aclose()
    takeover["killed_at"] = takeover["killed_at"].isoformat()
    violations = [k for k in ("fires_missed", "fires_doubled", "jobs_doubled", "fires_without_job",
                              "jobs_without_fire", "off_grid") if counts[k]]
    if counts["first_fire_after_kill_s"] is None:
        violations.append("no fire after the kill")
    if counts["fires_expected"] < seconds - 3:
        violations.append(f"only {counts['fires_expected']} fire times in {seconds:g} s")
    return {**counts, "takeover": takeover, "violations": violations, "passed": not violations}


def topology(database_url: str | None = None, redis_url: str | None = None) -> Topology:
    return Topology(schedulers=2, workers=(), stores=Stores(database_url=database_url, redis_url=redis_url,
                                                             migrate=database_url is None),
                    settings={"DISPATCHD_LOG_LEVEL": "INFO"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the schedule fires (default 60)")
    parser.add_argument("--kill-after", type=float, default=20.0, help="when the leader is killed (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "drills" / "schedule-failover.json")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-schedule-drill-"))
    with Stack(topology(), directory) as stack:
        results = loops.run(measure(stack, seconds=args.seconds, kill_after=args.kill_after))
    settings = Settings()
    evidence = {
        **header("schedule-failover-drill"),
        "setup": {
            "processes": "control plane, worker gateway, 2 schedulers (separate processes); private Postgres and Redis",
            "schedule": f"interval 1 s, catch-up all; {args.seconds:g} s; leader SIGKILLed at {args.kill_after:g} s",
            "leader_ttl_seconds": settings.leader_ttl_seconds,
            "schedule_grace_seconds": settings.schedule_grace_seconds,
        },
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    return verdict(evidence, directory, "schedule failover")


if __name__ == "__main__":
    sys.exit(main())
