"""One end-to-end phase, driven the same way whichever system is under load (stdlib only).

perf.e2e (dispatchd) and perf.celery_driver (Celery, in its own virtualenv) each implement
a `Side`: how to submit one call's worth of jobs, how long the queue is, how many of the
submitted jobs have ended, and their journeys. `run_phase` does the rest identically:

- open: --rate jobs/s for --seconds (a call every per_call/--rate s); CPU from the first submission until
  every job ended;
- saturation: --window submitters back to back behind the backlog gate for --seconds (or
  --max-jobs jobs); the window starts after --warmup and ends when the last job is
  recorded (the capped backlog drains at full speed, so the queue is never empty inside
  it); throughput is the jobs recorded in that window per second;
- bulk: --jobs jobs as fast as they are accepted, nobody running them; accepted per second.

Invariant: the CPU window and the counted jobs are the same span of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perf.cpu import CpuMeter, per_job_ms, pid_arg
from perf.journeys import Journey, legs, throughput
from perf.load import Gate, open_loop, saturate
from perf.progress import Progress, following
from perf.stats import rate, summary_ms

DRAIN_TIMEOUT = 120.0
DRAIN_POLL = 0.25


class Side(ABC):
    def __init__(self, pids: Mapping[str, int], driver: str, per_call: int = 1) -> None:
        self.meter = CpuMeter({**pids, driver: os.getpid()})
        self.per_call = per_call  # jobs per submission call
        self.sent: dict[str, float] = {}  # job id -> when the call carrying it was sent (time.time())
        self.errors: Counter[str] = Counter()
        self.call_seconds: list[float] = []
        self.window = (0.0, 0.0)  # measured span, epoch seconds
        self.cpu: dict[str, float] = {}

    @abstractmethod
    async def submit(self) -> None:
        """One call of `per_call` jobs; records accepted ids in `sent` and refusals in `errors`."""

    @abstractmethod
    async def backlog(self) -> int:
        """Jobs queued and not yet taken by a worker."""

    @abstractmethod
    async def ended(self, ids: list[str]) -> int:
        """How many of `ids` reached a terminal state."""

    @abstractmethod
    async def journeys(self) -> list[Journey]:
        """The timestamps of every accepted job that ended."""

    async def after_bulk(self) -> None:  # noqa: B027 - most sides have nothing to clean up
        """Clean up after bulk enqueue (the jobs will never run)."""

    def measure_from_now(self) -> None:
        self.meter.start()
        self.window = (time.time(), 0.0)

    def measure_until_now(self) -> None:
        self.cpu = self.meter.stop()
        self.window = (self.window[0], time.time())

    async def drain(self, progress: Progress) -> int:
        """Until every accepted job ended (or DRAIN_TIMEOUT); how many never did."""
        ids = list(self.sent)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (done := await self.ended(ids)) < len(ids) and time.monotonic() < deadline:
            progress.show(f"draining: {done}/{len(ids)} ended")
            await asyncio.sleep(DRAIN_POLL)
        return len(ids) - done


async def _saturate(side: Side, args: argparse.Namespace) -> None:
    async def after_warmup() -> None:
        await asyncio.sleep(args.warmup)
        side.measure_from_now()

    side.measure_from_now()  # in case submitting ends before the warmup does
    warmup = asyncio.create_task(after_warmup())
    calls = -(-args.max_jobs // side.per_call) if args.max_jobs else 0
    await saturate(args.window, args.seconds, side.submit, Gate(side.backlog, args.backlog), calls, side.per_call)
    warmup.cancel()


async def _bulk(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    side.measure_from_now()
    calls = iter(range(-(-args.jobs // side.per_call)))

    async def submitter() -> None:
        for _ in calls:
            await side.submit()

    await asyncio.gather(*(submitter() for _ in range(args.window)))
    side.measure_until_now()
    await side.after_bulk()
    return {"accepted_per_second": rate(len(side.sent), side.window[1] - side.window[0])}


async def run_phase(side: Side, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    if args.phase == "bulk":
        return await _bulk(side, args)
    if args.phase == "open":
        side.measure_from_now()
        await open_loop(args.rate / side.per_call, args.seconds, side.submit)  # --rate is jobs/s
    else:
        await _saturate(side, args)
    unfinished = await side.drain(progress)
    side.measure_until_now()
    journeys = await side.journeys()
    figures: dict[str, Any] = {"unfinished": unfinished, "not_succeeded": sum(1 for j in journeys if not j.succeeded)}
    figures |= legs(journeys)
    if args.phase == "saturation":
        last = max((j.recorded for j in journeys if j.recorded is not None), default=side.window[1])
        figures["throughput"] = throughput(journeys, side.window[0], last + 1e-6)
    else:
        figures["offered_rate"] = args.rate
    return figures


async def measure(side: Side, args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Run the phase with a progress line; the phase's evidence entry."""
    progress = Progress(label, args.seconds if args.phase != "bulk" else None)

    def status() -> str:
        return f"{label}: {len(side.sent)} accepted, {sum(side.errors.values())} errors"

    figures = await following(progress, status, asyncio.ensure_future(run_phase(side, args, progress)))
    jobs = figures["throughput"]["completed_in_window"] if args.phase == "saturation" else len(side.sent)
    return {
        "accepted": len(side.sent),
        "errors": dict(side.errors),
        "call_latency_ms": summary_ms(side.call_seconds),
        **figures,
        "cpu_window_seconds": round(side.window[1] - side.window[0], 3),
        "cpu_jobs": jobs,
        "cpu_seconds": side.cpu,
        "cpu_ms_per_job": per_job_ms(side.cpu, jobs),
    }


def phase_arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--phase", choices=["open", "saturation", "bulk"], required=True)
    p.add_argument("--rate", type=float, default=100.0, help="open: submissions per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0, help="saturation: not counted")
    p.add_argument("--window", type=int, default=64, help="submission calls in flight")
    p.add_argument("--backlog", type=int, default=3000, help="saturation: queued jobs above which submitting waits")
    p.add_argument("--jobs", type=int, default=10_000, help="bulk: jobs to enqueue")
    p.add_argument("--max-jobs", type=int, default=0, help="saturation: stop after this many (0: --seconds only)")
    p.add_argument("--pid", type=pid_arg, action="append", default=[], metavar="NAME=PID")
    p.add_argument("--out", type=Path, required=True)
    return p
