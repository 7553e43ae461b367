"""The dispatchd end-to-end driver (its own process): one phase of no-op jobs, timed from Postgres.

    python -m perf.e2e --phase open|saturation|bulk --submit single|batch --target CP --database-url URL ...

Phases: `open` submits at a fixed rate (fixed spacing) for --seconds; `saturation` submits
from one client as fast as the system completes (--window calls in flight, paused above
--backlog queued jobs) for --seconds or until --max-jobs are accepted, and counts completions
in the sustained window from --warmup until submitting ends;
`bulk` submits --jobs with no worker running and times acceptance only. After open and
saturation it waits for every accepted job to end, then reads all timestamps in one query:
executions.claimed_at (attempt 1), the handler's own start/end (its result), and
jobs.finished_at. CPU of the --pid processes is read over the measured window.
Writes one JSON object to --out; a batch phase the server cannot serve is written as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.v1 import job_service_pb2_grpc
from perf.cpu import CpuMeter, per_job_ms, pid_arg
from perf.journeys import Journey, handler_times, legs, throughput
from perf.load import Gate, open_loop, saturate
from perf.progress import Progress, following
from perf.stats import rate, summary_ms
from perf.submitters import BatchUnsupported, Submitter

DRAIN_TIMEOUT = 120.0
JOURNEYS_SQL = """
SELECT j.job_id::text AS job_id, j.status, extract(epoch FROM j.finished_at)::float8 AS recorded,
       extract(epoch FROM e.claimed_at)::float8 AS claimed, j.result
  FROM jobs j LEFT JOIN executions e ON e.job_id = j.job_id AND e.attempt = 1
 WHERE j.job_id = ANY($1::uuid[])
"""


class Run:
    def __init__(self, args: argparse.Namespace, submitter: Submitter, pool: asyncpg.Pool) -> None:
        self.args = args
        self.submitter = submitter
        self.pool = pool
        self.meter = CpuMeter({**dict(args.pid), "e2e-driver": os.getpid()})
        self.window = (0.0, 0.0)  # measured window, epoch seconds
        self.cpu: dict[str, float] = {}

    def submit_one(self) -> Any:
        return self.submitter.batch() if self.args.submit == "batch" else self.submitter.single()

    def measure_from_now(self) -> None:
        self.meter.start()
        self.window = (time.time(), 0.0)

    def measure_until_now(self) -> None:
        self.cpu = self.meter.stop()
        self.window = (self.window[0], time.time())

    async def queued(self) -> int:
        return int(
            await self.pool.fetchval("SELECT count(*) FROM executions WHERE status = $1", ExecutionStatus.QUEUED)
        )

    async def finished(self, ids: list[str]) -> int:
        sql = "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) AND finished_at IS NOT NULL"
        return int(await self.pool.fetchval(sql, ids))

    async def drain(self, progress: Progress) -> int:
        """Until every accepted job has ended (or DRAIN_TIMEOUT); how many never ended."""
        ids = list(self.submitter.sent)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        done = await self.finished(ids)
        while done < len(ids) and time.monotonic() < deadline:
            progress.show(f"draining: {done}/{len(ids)} ended")
            await asyncio.sleep(0.25)
            done = await self.finished(ids)
        return len(ids) - done

    async def journeys(self) -> list[Journey]:
        rows = await self.pool.fetch(JOURNEYS_SQL, list(self.submitter.sent))
        found = []
        for row in rows:
            start, end = handler_times(row["result"])
            found.append(
                Journey(
                    submitted=self.submitter.sent[row["job_id"]],
                    succeeded=row["status"] == JobStatus.SUCCEEDED,
                    claim=row["claimed"],
                    handler_start=start,
                    handler_done=end,
                    recorded=row["recorded"],
                )
            )
        return found

    def status(self) -> str:
        s = self.submitter
        return f"{self.args.phase}/{self.args.submit}: {s.accepted} accepted, {sum(s.errors.values())} errors"


async def run_phase(run: Run, progress: Progress) -> dict[str, Any]:
    args = run.args
    if args.phase == "open":
        run.measure_from_now()
        await open_loop(args.rate, args.seconds, run.submit_one)
    elif args.phase == "saturation":
        gate = Gate(run.queued, args.backlog)

        async def after_warmup() -> None:
            await asyncio.sleep(args.warmup)
            run.measure_from_now()

        def more() -> bool:
            return not args.max_jobs or run.submitter.accepted < args.max_jobs

        run.measure_from_now()  # in case submitting ends before the warmup does
        warmup = asyncio.create_task(after_warmup())
        await saturate(args.window, args.seconds, run.submit_one, gate, more)
        warmup.cancel()
        run.measure_until_now()
    else:
        run.measure_from_now()
        batches = -(-args.jobs // args.batch_size)
        queue = iter(range(batches))

        async def submitter() -> None:
            for _ in queue:
                await run.submit_one()

        await asyncio.gather(*(submitter() for _ in range(args.window)))
        run.measure_until_now()
        return {"accepted_per_second": rate(run.submitter.accepted, run.window[1] - run.window[0])}
    unfinished = await run.drain(progress)
    if args.phase == "open":
        run.measure_until_now()
    journeys = await run.journeys()
    figures: dict[str, Any] = {"unfinished": unfinished, "not_succeeded": sum(1 for j in journeys if not j.succeeded)}
    figures |= legs(journeys)
    if args.phase == "saturation":
        figures["throughput"] = throughput(journeys, *run.window)
    else:
        figures["offered_rate"] = args.rate
    return figures


def cpu_jobs(run: Run, figures: dict[str, Any]) -> int:
    """The jobs the CPU window paid for: completed in it (saturation) or accepted (open, bulk)."""
    if run.args.phase == "saturation":
        return int(figures["throughput"]["completed_in_window"])
    return run.submitter.accepted


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": args.phase, "submit": args.submit}
    pool = await asyncpg.create_pool(asyncpg_dsn(args.database_url), min_size=1, max_size=2)
    try:
        async with grpc.aio.insecure_channel(args.target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub: job_service_pb2_grpc.JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            submitter = Submitter(stub, args.batch_size)
            if args.submit == "batch":
                try:
                    await submitter.probe_batch()
                except BatchUnsupported as exc:
                    return result | {"skipped": str(exc)}
            run = Run(args, submitter, pool)
            progress = Progress(f"{args.phase}/{args.submit}", args.seconds if args.phase != "bulk" else None)
            figures = await following(progress, run.status, asyncio.ensure_future(run_phase(run, progress)))
    finally:
        await pool.close()
    jobs = cpu_jobs(run, figures)
    return result | {
        "accepted": submitter.accepted,
        "errors": dict(submitter.errors),
        "call_latency_ms": summary_ms(submitter.call_seconds),
        **figures,
        "cpu_window_seconds": round(run.window[1] - run.window[0], 3),
        "cpu_jobs": jobs,
        "cpu_seconds": run.cpu,
        "cpu_ms_per_job": per_job_ms(run.cpu, jobs),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=["open", "saturation", "bulk"], required=True)
    p.add_argument("--submit", choices=["single", "batch"], default="single")
    p.add_argument("--target", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--backlog", type=int, default=3000)
    p.add_argument("--jobs", type=int, default=10_000, help="bulk: jobs to enqueue")
    p.add_argument("--max-jobs", type=int, default=0, help="saturation: stop after this many (0: --seconds only)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--pid", type=pid_arg, action="append", default=[], metavar="NAME=PID")
    p.add_argument("--out", type=Path, required=True)
    return p


def main() -> None:
    args = parser().parse_args()
    result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
