"""`make perf-smoke`: latency and throughput through the real stack, written as evidence.

Starts private Postgres and Redis, the control plane, the worker gateway, two schedulers
and one worker (`--builtins`, concurrency --concurrency) as separate processes, exactly
as `make up` does, then measures:

- latency: jobs submitted one at a time; each is timed from SubmitJob until WaitJob
  returns it SUCCEEDED (submit -> pushed to the worker -> result -> visible to clients);
- throughput: a burst of jobs submitted by --clients concurrent callers; timed from the
  first submit until every job is SUCCEEDED.

Writes evidence/perf/smoke.json (or --out) with the raw percentiles and the setup.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from dispatchd.devtools.stores import free_port
from dispatchd.devtools.up import Child, Options, Stack
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "mean": round(statistics.fmean(ms), 2),
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
    }


async def _wait_succeeded(jobs: job_service_pb2_grpc.JobServiceAsyncStub, job_id: str) -> None:
    reply = await jobs.WaitJob(
        job_service_pb2.WaitJobRequest(job_id=job_id, timeout=duration_pb2.Duration(seconds=60)), timeout=70
    )
    if reply.job.status != common_pb2.JOB_STATUS_SUCCEEDED:
        raise RuntimeError(f"job {job_id} ended {common_pb2.JobStatus.Name(reply.job.status)}")


async def measure_latency(target: str, count: int) -> list[float]:
    async with grpc.aio.insecure_channel(target) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        samples = []
        for i in range(count):
            started = time.perf_counter()
            submitted = await jobs.SubmitJob(
                job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=f"latency {i}".encode())
            )
            await _wait_succeeded(jobs, submitted.job.job_id)
            samples.append(time.perf_counter() - started)
        return samples


async def measure_throughput(target: str, count: int, clients: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        submit_latencies: list[float] = []
        ids: list[str] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def submitter() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                reply = await jobs.SubmitJob(
                    job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=f"burst {i}".encode())
                )
                submit_latencies.append(time.perf_counter() - started)
                ids.append(reply.job.job_id)

        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(clients)))
        submitted = time.perf_counter() - started
        sem = asyncio.Semaphore(64)

        async def wait_one(job_id: str) -> None:
            async with sem:
                await _wait_succeeded(jobs, job_id)

        await asyncio.gather(*(wait_one(job_id) for job_id in ids))
        elapsed = time.perf_counter() - started
    return {
        "jobs": count,
        "clients": clients,
        "submit_seconds": round(submitted, 3),
        "submit_per_second": round(count / submitted, 1),
        "all_succeeded_seconds": round(elapsed, 3),
        "jobs_per_second": round(count / elapsed, 1),
        "submit_latency_ms": summary_ms(submit_latencies),  # type: ignore[dict-item]
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--burst-jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="worker max_concurrency")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "smoke.json")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="dispatchd-perf-"))
    listen = {name: f"127.0.0.1:{free_port()}" for name in ("cp", "gw", "s1", "s2")}
    options = Options(
        data_dir=data_dir,
        workers=0,
        check=False,
        control_plane=listen["cp"],
        gateway=listen["gw"],
        schedulers=[listen["s1"], listen["s2"]],
        pg_port=free_port(),
        redis_port=free_port(),
    )
    os.environ.pop("DATABASE_URL", None)  # always private stores: comparable runs
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DISPATCHD_LOG_LEVEL", "WARNING")
    stack = Stack(options)
    try:
        stack.start()
        worker_argv = [
            sys.executable, "-m", "dispatchd.sdk.cli", "--builtins",
            "--target", options.gateway, "--concurrency", str(args.concurrency),
        ]  # fmt: skip
        worker = Child("perf-worker", worker_argv, dict(os.environ), stack.log_dir, None)
        stack.children.append(worker)
        worker.start()
        asyncio.run(measure_latency(options.control_plane, 20))  # warm-up: connections, caches
        latency = asyncio.run(measure_latency(options.control_plane, args.latency_jobs))
        throughput = asyncio.run(measure_throughput(options.control_plane, args.burst_jobs, args.clients))
    finally:
        stack.stop()
    evidence = {
        "benchmark": "perf-smoke",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "setup": {
            "processes": "control plane, worker gateway, 2 schedulers, 1 worker; private Postgres and Redis",
            "job_type": "builtin.echo",
            "worker_concurrency": args.concurrency,
        },
        "latency_submit_to_succeeded_ms": summary_ms(latency),
        "throughput": throughput,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    print(json.dumps(evidence, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
