"""`make perf-smoke`: latency and throughput through the real stack, written as evidence.

Starts private Postgres and Redis, the control plane, the worker gateway, two schedulers
and one worker (`--builtins`, concurrency --concurrency) as separate processes, exactly
as `make up` does, then measures:

- latency: jobs submitted one at a time; each is timed from SubmitJob until WaitJob
  returns it SUCCEEDED (submit -> pushed to the worker -> result -> visible to clients);
- throughput: a burst of jobs submitted by --clients concurrent callers; timed from the
  first submit until every job is SUCCEEDED.

With --metrics (the default) every process serves /metrics and a scraper reads them all once
a second while measuring, as an eager Prometheus would; --no-metrics serves none.

Writes evidence/perf/smoke.json (or --out) with the raw percentiles and the setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from dispatchd.common import loops
from dispatchd.devtools.stack import Stack, Topology, Workers
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from perf.evidence import ROOT, header


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


SCRAPE_SECONDS = 1.0


@contextmanager
def scraping(urls: list[str]) -> Iterator[list[int]]:
    """Scrape every URL each SCRAPE_SECONDS on a thread until the block ends; yields the scrape count."""
    done = threading.Event()
    count = [0]

    def scrape() -> None:
        while not done.wait(SCRAPE_SECONDS):
            for url in urls:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    reply.read()
            count[0] += 1

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    thread.start()
    try:
        yield count
    finally:
        done.set()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--burst-jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="worker max_concurrency")
    parser.add_argument(
        "--metrics", action=argparse.BooleanOptionalAction, default=True, help="serve and scrape /metrics"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "smoke.json")
    args = parser.parse_args(argv)

    # Always private stores (not DATABASE_URL/REDIS_URL): comparable runs.
    platform = Topology(
        workers=(Workers(1, ("--builtins",), concurrency=args.concurrency),),
        settings={"DISPATCHD_LOG_LEVEL": "WARNING"},
        metrics=args.metrics,
    )
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-perf-"))
    try:
        with Stack(platform, directory) as stack:
            target = stack.control_plane_target
            loops.run(measure_latency(target, 20))  # warm-up: connections, caches
            with scraping(list(stack.metrics_urls().values())) as scrapes:
                latency = loops.run(measure_latency(target, args.latency_jobs))
                throughput = loops.run(measure_throughput(target, args.burst_jobs, args.clients))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    evidence = {
        **header("perf-smoke"),
        "setup": {
            "processes": "control plane, worker gateway, 2 schedulers, 1 worker; private Postgres and Redis",
            "job_type": "builtin.echo",
            "worker_concurrency": args.concurrency,
            "metrics": f"served, every process scraped each {SCRAPE_SECONDS:g}s ({scrapes[0]} rounds)"
            if args.metrics
            else "not served",
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
