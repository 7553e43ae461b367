"""`make drills`: how fast the platform repairs itself after a SIGKILL, written as evidence.

    python -m perf.drills [--runs 5] [--out evidence/drills/failover.json]

One stack (private Postgres and Redis, control plane, worker gateway, two schedulers, two
workers with concurrency 1) as separate processes; then, `--runs` times each:

- scheduler takeover: SIGKILL the scheduler holding the leader lease and, right away,
  submit a flaky job whose first attempt fails, so its retry becomes due within a second
  of the kill (backoff 0-1 s). Measured: kill -> the standby's token in the lease key, and
  kill -> the retry claimed by a worker (only a leader promotes a delayed retry). The
  killed replica is restarted and becomes the standby for the next run. A successor that
  is the killed replica itself is a violation.
- gateway failover: slow jobs run on the workers through the gateway they are on; SIGKILL
  that gateway. The workers reconnect to the other one; echo jobs submitted after the kill
  measure the gap (kill -> the first result accepted, necessarily through the other
  gateway). Every execution active at the kill must end SUCCEEDED or be followed by a new
  attempt, and every job of the run must end SUCCEEDED (checked in Postgres). The killed
  gateway is restarted; the next run kills the other one.
- worker requeue: a builtin.sleep job runs on one worker while the other is idle; SIGKILL
  the busy one. Measured: kill -> the next attempt claimed by, and started on, the idle
  worker. The job is then cancelled and the killed worker restarted.

Writes per-run samples and min/median/max to evidence/drills/failover.json (or --out); exits
1 when a check fails.
"""

from __future__ import annotations

import os

# Processes are (re)started from here with fork+exec; gRPC's fork handlers must stay off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis

from dispatchd.common import loops
from dispatchd.devtools.drills.local import LocalPlatform
from dispatchd.devtools.drills.platform import SCHEDULER, WORKER_GATEWAY
from dispatchd.devtools.stack import Stack
from dispatchd.platform.config import Settings
from dispatchd.platform.db import create_pool
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from perf.chaos_load import CHANNEL_OPTIONS, millis
from perf.cluster import HEARTBEAT_SECONDS, KEYS, holder_of, topology
from perf.evidence import ROOT, header, verdict
from perf.gateway_failover import gateway_failover

POLL = 0.005
STEP_TIMEOUT = 30.0


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


class Drills:
    def __init__(self, stack: Stack, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.stack = stack
        self.platform = LocalPlatform(stack)
        self.pool = pool
        self.redis = redis
        self.channel = grpc.aio.insecure_channel(stack.control_plane_target, options=CHANNEL_OPTIONS)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def _until(self, what: str, probe: Any, timeout: float = STEP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"drill step timed out after {timeout:.0f}s: {what}")
            await asyncio.sleep(POLL)

    async def _token(self) -> str | None:
        value = await self.redis.get(KEYS.leader)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)

    async def _attempt(self, job_id: str, attempt: int, column: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(
            "SELECT e.*, extract(epoch FROM e.claimed_at) AS claimed_epoch, extract(epoch FROM e.started_at)"
            " AS started_epoch, extract(epoch FROM e.available_at) AS available_epoch FROM executions e"
            f" WHERE job_id = $1::uuid AND attempt = $2 AND {column} IS NOT NULL",
            job_id,
            attempt,
        )
        return row

    def _process_of(self, worker_id: str) -> str:
        return next(name for name, known in self.stack.worker_ids.items() if known == worker_id)

    async def _submit(self, job_type: str, payload: dict[str, Any], backoff_ms: int) -> str:
        backoff = millis(backoff_ms)
        policy = common_pb2.RetryPolicy(max_attempts=3, initial_backoff=backoff, max_backoff=backoff)
        request = job_service_pb2.SubmitJobRequest(
            job_type=job_type, payload=json.dumps(payload).encode(), retry_policy=policy
        )
        reply = await self.jobs.SubmitJob(request, timeout=10)
        return str(reply.job.job_id)

    async def takeover(self) -> dict[str, float | str]:
        token = await self._until("a scheduler leads", self._token)
        leader = holder_of(self.stack, token)
        assert leader is not None, f"no scheduler logged leader token {token}"
        killed_at = time.time()
        started = time.monotonic()
        replica = f"{SCHEDULER}#{self.platform.names(SCHEDULER).index(leader)}"
        await self.platform.stop(replica, hard=True)
        # Its retry is due 0-1 s from now; only a leader promotes it onto a ready queue.
        job_id = await self._submit("builtin.flaky", {"fail_attempts": 1}, backoff_ms=1000)

        async def new_token() -> str | None:
            current = await self._token()
            return current if current not in (None, token) else None

        successor = await self._until("the standby takes the lease", new_token)
        lease_s = time.monotonic() - started
        retry = await self._until("the retry is claimed", lambda: self._attempt(job_id, 2, "claimed_at"))
        await self.platform.start(replica)
        return {
            "killed": leader,
            "successor": holder_of(self.stack, successor) or "?",
            "lease_takeover_s": round(lease_s, 3),
            "retry_due_after_kill_s": round(float(retry["available_epoch"]) - killed_at, 3),
            "retry_claimed_after_kill_s": round(float(retry["claimed_epoch"]) - killed_at, 3),
        }

    async def requeue(self) -> dict[str, float | str]:
        job_id = await self._submit("builtin.sleep", {"seconds": 120}, backoff_ms=0)
        first = await self._until("the job runs", lambda: self._attempt(job_id, 1, "started_at"))
        victim = self._process_of(first["worker_id"])
        killed_at = time.time()
        await asyncio.to_thread(self.stack.kill, victim)
        second = await self._until("the next attempt starts", lambda: self._attempt(job_id, 2, "started_at"))
        reason = await self.pool.fetchval(
            "SELECT error_message FROM executions WHERE job_id = $1::uuid AND attempt = 1", job_id
        )
        await self.jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id, reason="drill over"), timeout=10)
        since = await asyncio.to_thread(self.stack.db_now)
        await asyncio.to_thread(self.stack.start_again, victim)
        await asyncio.to_thread(self.stack.wait_workers, [victim], since)
        return {
            "killed": victim,
            "taken_over_by": self._process_of(second["worker_id"]),
            "first_attempt_ended_as": str(reason),
            "claimed_after_kill_s": round(float(second["claimed_epoch"]) - killed_at, 3),
            "started_after_kill_s": round(float(second["started_epoch"]) - killed_at, 3),
        }


async def _drill(stack: Stack, runs: int, workers: list[str]) -> dict[str, Any]:
    pool = await create_pool(stack.database_url, min_size=1, max_size=2)
    client = aioredis.from_url(stack.redis_url)
    drills = Drills(stack, pool, client)
    try:
        takeovers = []
        for _ in range(runs):
            takeovers.append(await drills.takeover())
            await asyncio.sleep(1.0)  # let the restarted replica settle in as the standby
        requeues = [await drills.requeue() for _ in range(runs)]
        # The workers start on gateway #0 and each kill moves them to the other one.
        gateways = [
            await gateway_failover(drills.platform, pool, drills.jobs, run % 2, workers) for run in range(runs)
        ]
    finally:
        await drills.close()
        await client.aclose()
        await pool.close()
    violations = [f"{s['killed']} was killed yet took the lease" for s in takeovers if s["successor"] == s["killed"]]
    violations += [v for _, found in gateways for v in found]
    return {
        "violations": violations,
        "passed": not violations,
        "scheduler_takeover": {
            "runs": runs,
            "lease_takeover_s": summary([float(s["lease_takeover_s"]) for s in takeovers]),
            "delayed_retry_claimed_after_kill_s": summary([float(s["retry_claimed_after_kill_s"]) for s in takeovers]),
            "samples": takeovers,
        },
        "worker_requeue": {
            "runs": runs,
            "claimed_by_idle_worker_s": summary([float(s["claimed_after_kill_s"]) for s in requeues]),
            "started_on_idle_worker_s": summary([float(s["started_after_kill_s"]) for s in requeues]),
            "samples": requeues,
        },
        "gateway_failover": {
            "runs": runs,
            "first_result_after_kill_s": summary([float(s["first_result_after_kill_s"]) for s, _ in gateways]),
            "workers_reconnected_after_kill_s": summary(
                [float(s["workers_reconnected_after_kill_s"]) for s, _ in gateways]
            ),
            "samples": [s for s, _ in gateways],
        },
    }


def run(runs: int, directory: Path, out: Path | None) -> dict[str, Any]:
    spec = dataclasses.replace(topology(workers=0, concurrency=1, schedulers=2), gateways=2)
    group = topology(workers=2, concurrency=1).workers[0]
    with Stack(spec, directory) as stack:
        # Each worker is given both gateways, in the same order, so all start on #0.
        both = ",".join(LocalPlatform(stack).address(f"{WORKER_GATEWAY}#{i}") for i in range(2))
        since = stack.db_now()
        workers = [stack.add_worker(f"worker-{i}", group=group, target=both).name for i in (1, 2)]
        stack.wait_workers(workers, since)
        results = loops.run(_drill(stack, runs, workers))
    settings = Settings()
    evidence = {
        **header("failover-drills"),
        "setup": {
            "processes": "control plane, 2 worker gateways, 2 schedulers, 2 workers (concurrency 1, given both "
            "gateways); "
            "private Postgres and Redis",
            "leader_ttl_seconds": settings.leader_ttl_seconds,
            "reconcile_seconds": settings.reconcile_seconds,
            "worker_heartbeat_seconds": HEARTBEAT_SECONDS,
            "kill": "SIGKILL of the whole process group",
        },
        **results,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(evidence, indent=2) + "\n")
    return evidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each drill (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "drills" / "failover.json")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-drills-"))
    try:
        evidence = run(args.runs, directory, args.out)
    except BaseException:
        print(f"drill failed; logs kept in {directory / 'logs'}", file=sys.stderr)
        raise
    return verdict(evidence, directory, "failover")


if __name__ == "__main__":
    sys.exit(main())
