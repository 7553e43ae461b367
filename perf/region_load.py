"""The region drill's client: submitters that record every acknowledged job, and where and when.

Invariant: a job id is recorded only after the region acknowledged its SubmitJob (the reply
arrived), with the monotonic time of that acknowledgement and the region that gave it; a
refused or failed call records nothing but moves on to the next region, like a client whose
first choice is down.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import grpc

from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from perf.chaos_load import CHANNEL_OPTIONS

CALL_TIMEOUT = 1.0


@dataclass(frozen=True)
class Ack:
    job_id: str
    region: str
    at: float  # time.monotonic() when the acknowledgement arrived
    latency: float


@dataclass
class Load:
    """`concurrency` submitters, each trying `targets` (region -> control plane) in order until one accepts."""

    targets: dict[str, str]
    concurrency: int = 4
    acks: list[Ack] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)  # "region:STATUS" -> count

    async def run(self, stop: asyncio.Event) -> None:
        channels = {r: grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for r, t in self.targets.items()}
        stubs: dict[str, job_service_pb2_grpc.JobServiceAsyncStub] = {
            r: job_service_pb2_grpc.JobServiceStub(c) for r, c in channels.items()
        }
        try:
            await asyncio.gather(*(self._submitter(stubs, stop) for _ in range(self.concurrency)))
        finally:
            for channel in channels.values():
                await channel.close(None)

    async def _submitter(self, stubs: dict[str, job_service_pb2_grpc.JobServiceAsyncStub], stop: asyncio.Event) -> None:
        request = job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=b"region-drill")
        while not stop.is_set():
            accepted = False
            for region, stub in stubs.items():
                started = time.monotonic()
                try:
                    reply = await stub.SubmitJob(request, timeout=CALL_TIMEOUT)
                except grpc.RpcError as exc:
                    key = f"{region}:{exc.code().name}"
                    self.refusals[key] = self.refusals.get(key, 0) + 1
                    continue
                now = time.monotonic()
                self.acks.append(Ack(str(reply.job.job_id), region, now, now - started))
                accepted = True
                break
            if not accepted:
                await asyncio.sleep(0.02)  # every region refused: do not spin

    def by(self, region: str) -> list[Ack]:
        return [ack for ack in self.acks if ack.region == region]


async def run_for(load: Load, seconds: float) -> Load:
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return load


def latency_summary(acks: list[Ack], seconds: float) -> dict[str, float]:
    """Throughput and submit latency (ms) of a steady run."""
    if not acks:
        return {"jobs": 0}
    ms = sorted(a.latency * 1000 for a in acks)
    return {
        "jobs": len(acks),
        "throughput_per_s": round(len(acks) / seconds, 1),
        "latency_ms_p50": round(statistics.median(ms), 2),
        "latency_ms_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "latency_ms_mean": round(statistics.fmean(ms), 2),
    }
