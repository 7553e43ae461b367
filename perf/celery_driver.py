"""The Celery end-to-end driver (its own process, in the Celery virtualenv): one phase of no-op tasks.

    .perf/celery-venv/bin/python -m perf.celery_driver --phase open|saturation|bulk --redis-url URL ...

The same pacing as perf.e2e (perf.load), from one client: `apply_async` is synchronous, so
one submitter runs back to back. Timestamps per task: sent (client time.time()), the
handler's own start/end (its result) and the result backend's `date_done` (submit ->
recorded); Celery has no claim timestamp, so that leg is reported missing. Backpressure
and draining read the broker queue's length and the result keys. Imports only the stdlib,
Celery and redis (the venv has nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import redis

from perf.celery_tasks import noop
from perf.cpu import CpuMeter, per_job_ms, pid_arg
from perf.journeys import Journey, handler_times, legs, throughput
from perf.load import Gate, open_loop, saturate
from perf.progress import Progress, following
from perf.stats import rate, summary_ms

QUEUE = "celery"
META = "celery-task-meta-"
DRAIN_TIMEOUT = 120.0
CHUNK = 1000


def recorded_at(date_done: str | None) -> float | None:
    """Celery's date_done (ISO 8601, UTC, naive in some versions) as epoch seconds."""
    if not date_done:
        return None
    when = dt.datetime.fromisoformat(date_done)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis = redis.Redis.from_url(args.redis_url)
        self.sent: dict[str, float] = {}
        self.errors: dict[str, int] = {}
        self.call_seconds: list[float] = []
        self.meter = CpuMeter({**dict(args.pid), "celery-driver": os.getpid()})
        self.window = (0.0, 0.0)
        self.cpu: dict[str, float] = {}

    async def submit(self) -> None:
        sent, started = time.time(), time.perf_counter()
        try:
            result = noop.apply_async()
        except Exception as exc:  # whatever the broker says is an error of this load
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
        else:
            self.call_seconds.append(time.perf_counter() - started)
            self.sent[result.id] = sent
        await asyncio.sleep(0)  # apply_async blocks: let the gate and the timers run

    async def backlog(self) -> int:
        return int(self.redis.llen(QUEUE))

    def metas(self, ids: list[str]) -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = []
        for i in range(0, len(ids), CHUNK):
            values = self.redis.mget([META + task_id for task_id in ids[i : i + CHUNK]])
            found += [None if v is None else json.loads(v) for v in values]
        return found

    def measure_from_now(self) -> None:
        self.meter.start()
        self.window = (time.time(), 0.0)

    def measure_until_now(self) -> None:
        self.cpu = self.meter.stop()
        self.window = (self.window[0], time.time())

    async def drain(self, progress: Progress) -> int:
        ids = list(self.sent)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (done := sum(m is not None for m in self.metas(ids))) < len(ids) and time.monotonic() < deadline:
            progress.show(f"draining: {done}/{len(ids)} ended")
            await asyncio.sleep(0.25)
        return len(ids) - done

    def journeys(self) -> list[Journey]:
        found = []
        for task_id, meta in zip(self.sent, self.metas(list(self.sent)), strict=True):
            if meta is None:
                continue
            start, end = handler_times(meta.get("result") if isinstance(meta.get("result"), str) else None)
            found.append(Journey(self.sent[task_id], meta.get("status") == "SUCCESS", None, start, end,
                                 recorded_at(meta.get("date_done"))))  # fmt: skip
        return found

    def status(self) -> str:
        return f"celery {self.args.phase}: {len(self.sent)} sent, {sum(self.errors.values())} errors"


async def run_phase(run: Run, progress: Progress) -> dict[str, Any]:
    args = run.args
    run.measure_from_now()
    if args.phase == "open":
        await open_loop(args.rate, args.seconds, run.submit)
    elif args.phase == "saturation":

        async def after_warmup() -> None:
            await asyncio.sleep(args.warmup)
            run.measure_from_now()

        warmup = asyncio.create_task(after_warmup())
        more = lambda: not args.max_jobs or len(run.sent) < args.max_jobs  # noqa: E731
        await saturate(1, args.seconds, run.submit, Gate(run.backlog, args.backlog), more)
        warmup.cancel()
        run.measure_until_now()
    else:
        for _ in range(args.jobs):
            await run.submit()
        run.measure_until_now()
        run.redis.delete(QUEUE)  # nobody will run them
        return {"accepted_per_second": rate(len(run.sent), run.window[1] - run.window[0])}
    unfinished = await run.drain(progress)
    if args.phase == "open":
        run.measure_until_now()
    journeys = run.journeys()
    figures: dict[str, Any] = {"unfinished": unfinished, "not_succeeded": sum(1 for j in journeys if not j.succeeded)}
    figures |= legs(journeys)
    if args.phase == "saturation":
        figures["throughput"] = throughput(journeys, *run.window)
    else:
        figures["offered_rate"] = args.rate
    return figures


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    progress = Progress(f"celery {args.phase}", args.seconds if args.phase != "bulk" else None)
    figures = await following(progress, run.status, asyncio.ensure_future(run_phase(run, progress)))
    jobs = figures["throughput"]["completed_in_window"] if args.phase == "saturation" else len(run.sent)
    return {
        "phase": args.phase,
        "submit": "apply_async",
        "accepted": len(run.sent),
        "errors": run.errors,
        "call_latency_ms": summary_ms(run.call_seconds),
        **figures,
        "cpu_window_seconds": round(run.window[1] - run.window[0], 3),
        "cpu_jobs": jobs,
        "cpu_seconds": run.cpu,
        "cpu_ms_per_job": per_job_ms(run.cpu, jobs),
    }


def wait_worker(timeout: float = 60.0) -> None:
    """Until the worker answers: one task through it."""
    noop.apply_async().get(timeout=timeout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=["open", "saturation", "bulk", "ping"], required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--backlog", type=int, default=3000)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--max-jobs", type=int, default=0)
    p.add_argument("--pid", type=pid_arg, action="append", default=[], metavar="NAME=PID")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.phase == "ping":
        wait_worker()
        import celery

        result: dict[str, Any] = {"celery": celery.__version__, "redis_client": redis.__version__}
    else:
        result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
