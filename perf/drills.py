"""`make drills`: how fast the platform repairs itself after a SIGKILL, written as evidence.

    python -m perf.drills [--runs 5] [--out evidence/drills/failover.json]
                          [--platform local|kubernetes [--namespace dispatchd] [--context CTX]]

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

Kubernetes mode (`--platform kubernetes`, perf.drill_target; run by the kind-e2e workflow,
never where dispatchd is developed): the same measurement code against the deployed dev
overlay through port-forwards. Takeover: the leader is the scheduler pod whose log holds the
lease key's token; its pod is deleted with grace 0 (its Deployment replaces it, the new pod
has a new token, so "a different holder" is a different pod). Gateway failover: the gateway
is scaled to 2 first; the victim is the pod the workers' rows say they are on (gateway ids
are "<pod name>-<suffix>"); they reconnect through the headless Service to the other pod.
Worker requeue needs two workers of which one is idle; the dev overlay runs one, so it is
skipped there (the evidence says so).

Writes per-run samples and min/median/max to evidence/drills/failover.json (or --out), with
the `platform` it ran on; exits 1 when a check fails.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import redis.asyncio as aioredis

from dispatchd.common import loops
from dispatchd.devtools.drills.local import LocalPlatform
from dispatchd.devtools.drills.platform import SCHEDULER, WORKER_GATEWAY, Platform
from dispatchd.devtools.stack import Stack
from dispatchd.platform.config import Settings
from dispatchd.platform.db import create_pool
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from perf import drill_target
from perf.chaos_load import CHANNEL_OPTIONS, millis
from perf.cluster import HEARTBEAT_SECONDS, KEYS, topology
from perf.drill_target import KUBERNETES, Target, holder
from perf.evidence import ROOT, header, verdict
from perf.gateway_failover import gateway_failover

if TYPE_CHECKING:
    from dispatchd.devtools.drills.kubernetes import KubernetesPlatform

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
    def __init__(self, target: Target, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.target = target
        self.platform: Platform = target.platform
        self.pool = pool
        self.redis = redis
        self.channel = grpc.aio.insecure_channel(target.control_plane, options=CHANNEL_OPTIONS)
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

    async def _holder(self, token: str) -> str | None:
        return holder(await self.target.scheduler_logs(), token)

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
        logs = await self.target.scheduler_logs()
        leader = holder(logs, token)
        assert leader is not None, f"no scheduler logged leader token {token}"
        killed_at = time.time()
        started = time.monotonic()
        replica = f"{SCHEDULER}#{list(logs).index(leader)}"
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
            "successor": await self._until("the successor logged its token", lambda: self._holder(successor)),
            "lease_takeover_s": round(lease_s, 3),
            "retry_due_after_kill_s": round(float(retry["available_epoch"]) - killed_at, 3),
            "retry_claimed_after_kill_s": round(float(retry["claimed_epoch"]) - killed_at, 3),
        }


class Requeue:
    """Worker requeue, local only: it kills worker processes by name and needs an idle second worker."""

    def __init__(self, drills: Drills, stack: Stack) -> None:
        self.drills = drills
        self.stack = stack

    def _process_of(self, worker_id: str) -> str:
        return next(name for name, known in self.stack.worker_ids.items() if known == worker_id)

    async def __call__(self) -> dict[str, float | str]:
        d = self.drills
        job_id = await d._submit("builtin.sleep", {"seconds": 120}, backoff_ms=0)
        first = await d._until("the job runs", lambda: d._attempt(job_id, 1, "started_at"))
        victim = self._process_of(first["worker_id"])
        killed_at = time.time()
        await asyncio.to_thread(self.stack.kill, victim)
        second = await d._until("the next attempt starts", lambda: d._attempt(job_id, 2, "started_at"))
        reason = await d.pool.fetchval(
            "SELECT error_message FROM executions WHERE job_id = $1::uuid AND attempt = 1", job_id
        )
        await d.jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id, reason="drill over"), timeout=10)
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


# Which gateway replica run N kills, and the workers attached to it (they must reconnect).
Victim = Callable[[asyncpg.Pool, int], Awaitable[tuple[int, list[str]]]]


async def _drill(target: Target, runs: int, victim: Victim, requeue_on: Stack | None) -> dict[str, Any]:
    pool = await create_pool(target.database_url, min_size=1, max_size=2)
    client = aioredis.from_url(target.redis_url)
    drills = Drills(target, pool, client)
    try:
        takeovers = []
        for _ in range(runs):
            takeovers.append(await drills.takeover())
            await asyncio.sleep(1.0)  # let the restarted replica settle in as the standby
        requeue = None if requeue_on is None else Requeue(drills, requeue_on)
        requeues = [] if requeue is None else [await requeue() for _ in range(runs)]
        gateways = []
        for run in range(runs):
            replica, attached = await victim(pool, run)
            gateways.append(await gateway_failover(drills.platform, pool, drills.jobs, replica, attached))
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
            "runs": len(requeues),
            "claimed_by_idle_worker_s": summary([float(s["claimed_after_kill_s"]) for s in requeues]),
            "started_on_idle_worker_s": summary([float(s["started_after_kill_s"]) for s in requeues]),
            "samples": requeues,
            **({} if requeue_on is not None else {"skipped": REQUEUE_SKIPPED}),
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


REQUEUE_SKIPPED = "kubernetes mode: the dev overlay runs one worker, so no idle worker can take the job over"


def run(runs: int, directory: Path, out: Path | None) -> dict[str, Any]:
    spec = dataclasses.replace(topology(workers=0, concurrency=1, schedulers=2), gateways=2)
    group = topology(workers=2, concurrency=1).workers[0]
    with Stack(spec, directory) as stack:
        # Each worker is given both gateways, in the same order, so all start on #0.
        both = ",".join(LocalPlatform(stack).address(f"{WORKER_GATEWAY}#{i}") for i in range(2))
        since = stack.db_now()
        workers = [stack.add_worker(f"worker-{i}", group=group, target=both).name for i in (1, 2)]
        stack.wait_workers(workers, since)

        async def alternate(pool: asyncpg.Pool, run: int) -> tuple[int, list[str]]:
            return run % 2, workers  # they start on gateway #0 and each kill moves them to the other one

        results = loops.run(_drill(drill_target.local(stack), runs, alternate, stack))
    setup = {
        "processes": "control plane, 2 worker gateways, 2 schedulers, 2 workers (concurrency 1, given both "
        "gateways); private Postgres and Redis",
        "kill": "SIGKILL of the whole process group",
    }
    return written(drill_target.LOCAL, setup, results, out)


def run_kubernetes(runs: int, namespace: str, context: str | None, out: Path | None) -> dict[str, Any]:
    from dispatchd.devtools.drills.kubernetes import KubernetesPlatform  # a dev extra: only in this mode

    with drill_target.kubernetes(namespace, context) as target:
        platform = target.platform
        assert isinstance(platform, KubernetesPlatform)

        async def attached(pool: asyncpg.Pool, run: int) -> tuple[int, list[str]]:
            await platform.scale(WORKER_GATEWAY, 2)  # a second gateway for the workers to move to
            return await gateway_with_workers(platform, pool)

        results = loops.run(_drill(target, runs, attached, None))
    setup = {
        "processes": f"the dev overlay in namespace {namespace}: control plane, scheduler (2), worker gateway "
        "(scaled to 2), the example worker; in-cluster Postgres and Redis, reached through port-forwards",
        "kill": "pod delete with grace period 0 (the Deployment replaces the pod)",
    }
    return written(KUBERNETES, setup, results, out)


async def gateway_with_workers(platform: KubernetesPlatform, pool: asyncpg.Pool) -> tuple[int, list[str]]:
    """The gateway replica most connected workers are on, and those workers."""
    pods = await asyncio.to_thread(drill_target.live_pods, platform, WORKER_GATEWAY)
    rows = await pool.fetch("SELECT worker_id, gateway_id FROM workers WHERE connected_at IS NOT NULL")
    on: dict[str, list[str]] = {}
    for row in rows:
        pod = drill_target.gateway_pod(str(row["gateway_id"] or ""), pods)
        if pod is not None:
            on.setdefault(pod, []).append(str(row["worker_id"]))
    if not on:
        raise RuntimeError(f"no worker is connected to any of the gateway pods {pods}")
    busiest = max(on, key=lambda pod: len(on[pod]))
    return pods.index(busiest), on[busiest]


def written(platform: str, setup: dict[str, str], results: dict[str, Any], out: Path | None) -> dict[str, Any]:
    settings = Settings()
    evidence = {
        **header("failover-drills"),
        "platform": platform,
        "setup": {
            "processes": setup["processes"],
            "leader_ttl_seconds": settings.leader_ttl_seconds,
            "reconcile_seconds": settings.reconcile_seconds,
            "worker_heartbeat_seconds": HEARTBEAT_SECONDS,
            "kill": setup["kill"],
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
    drill_target.add_arguments(parser)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-drills-"))
    try:
        if drill_target.platform_of(args) == KUBERNETES:
            evidence = run_kubernetes(args.runs, args.namespace, args.context, args.out)
        else:
            evidence = run(args.runs, directory, args.out)
    except BaseException:
        print(f"drill failed; logs kept in {directory / 'logs'}", file=sys.stderr)
        raise
    return verdict(evidence, directory, "failover")


if __name__ == "__main__":
    sys.exit(main())
