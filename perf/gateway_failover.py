"""The gateway failover drill: SIGKILL the gateway the workers are on; they move to the other.

Acts on the platform through `Platform` only (stop/start a gateway) plus the database and the
control plane, so it needs no knowledge of processes. Invariant checked in Postgres: every
execution active when the gateway died ends SUCCEEDED or is followed by a newer attempt
(requeued), and every job the run submitted ends SUCCEEDED.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from dispatchd.devtools.drills.platform import WORKER_GATEWAY, Platform
from dispatchd.platform.states import EXECUTION_ACTIVE, JOB_TERMINAL
from dispatchd.platform.states import ExecutionStatus as E
from dispatchd.platform.states import JobStatus as J
from dispatchd.platform.store.guards import one_of
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from perf.chaos_load import millis

SLOW_JOBS = 4
SLOW_SECONDS = 1.5
ECHO_EVERY = 0.05
STEP_TIMEOUT = 60.0


async def _submit(jobs: job_service_pb2_grpc.JobServiceAsyncStub, job_type: str, payload: bytes) -> str:
    policy = common_pb2.RetryPolicy(max_attempts=5, initial_backoff=millis(100), max_backoff=millis(500))
    request = job_service_pb2.SubmitJobRequest(job_type=job_type, payload=payload, retry_policy=policy)
    return str((await jobs.SubmitJob(request, timeout=10)).job.job_id)


async def _poll(what: str, probe: Any, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gateway failover: {what} within {timeout:.0f}s")
        await asyncio.sleep(0.02)
    return value


async def gateway_failover(
    platform: Platform,
    pool: asyncpg.Pool,
    jobs: job_service_pb2_grpc.JobServiceAsyncStub,
    victim: int,
    workers: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """One run killing gateway #`victim` while the `workers` are attached to it; (sample, violations)."""
    slow = json.dumps({"seconds": SLOW_SECONDS}).encode()
    ids = [await _submit(jobs, "builtin.sleep", slow) for _ in range(SLOW_JOBS)]
    running = f"SELECT count(*) FROM executions WHERE job_id = ANY($1::uuid[]) AND status = {int(E.RUNNING)}"
    await _poll("slow jobs run", lambda: pool.fetchval(running, ids))
    active = await pool.fetch(
        f"SELECT execution_id, job_id, attempt FROM executions WHERE job_id = ANY($1::uuid[])"
        f" AND {one_of('status', EXECUTION_ACTIVE)}",
        ids,
    )
    killed_at = await pool.fetchval("SELECT clock_timestamp()")
    started = time.monotonic()
    await platform.stop(f"{WORKER_GATEWAY}#{victim}", hard=True)
    done = f"SELECT min(finished_at) FROM executions WHERE job_id = ANY($1::uuid[]) AND status = {int(E.SUCCEEDED)}"
    echoes: list[str] = []

    async def first_result() -> Any:
        echoes.append(await _submit(jobs, "builtin.echo", b"after the gateway died"))
        await asyncio.sleep(ECHO_EVERY)
        return await pool.fetchval(done, echoes)

    first = await _poll("a result accepted through the other gateway", first_result)
    gap = time.monotonic() - started
    reconnected = await _poll(
        "the workers reconnect",
        lambda: pool.fetchval(
            "SELECT max(connected_at) FROM workers WHERE worker_id = ANY($1::text[]) AND connected_at > $2"
            " HAVING count(*) = cardinality($1::text[])",
            workers,
            killed_at,
        ),
    )
    everything = ids + echoes
    terminal = (
        "SELECT count(*) = cardinality($1::uuid[]) FROM jobs"
        f" WHERE job_id = ANY($1::uuid[]) AND {one_of('status', JOB_TERMINAL)}"
    )
    await _poll("every job of the run ends", lambda: pool.fetchval(terminal, everything))
    violations = await _check(pool, everything, active)
    await platform.start(f"{WORKER_GATEWAY}#{victim}")
    sample = {
        "killed": f"{WORKER_GATEWAY}#{victim}",
        "executions_active_at_kill": len(active),
        "first_result_after_kill_s": round((first - killed_at).total_seconds(), 3),
        "gap_measured_by_drill_s": round(gap, 3),
        "workers_reconnected_after_kill_s": round((reconnected - killed_at).total_seconds(), 3),
    }
    return sample, violations


async def _check(pool: asyncpg.Pool, job_ids: list[str], active: list[asyncpg.Record]) -> list[str]:
    violations = []
    jobs = await pool.fetch("SELECT job_id, status FROM jobs WHERE job_id = ANY($1::uuid[])", job_ids)
    violations += [f"job {j['job_id']} ended {J(j['status']).name}" for j in jobs if j["status"] != J.SUCCEEDED]
    for row in active:
        after = await pool.fetchrow(
            "SELECT (SELECT status FROM executions WHERE execution_id = $1) AS status,"
            " (SELECT max(attempt) FROM executions WHERE job_id = $2) AS last",
            row["execution_id"],
            row["job_id"],
        )
        if after["status"] != E.SUCCEEDED and after["last"] <= row["attempt"]:
            violations.append(f"execution {row['execution_id']} ended {E(after['status']).name} and was not requeued")
    return violations
