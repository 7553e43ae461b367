"""The worker-load driver (its own process): hundreds of worker streams registering and heartbeating.

    python -m perf.worker_load --target GATEWAY --streams 500 --seconds 10 --out load.json

Each stream is a raw `WorkerService.Connect` call (generated stubs, no SDK) on its own
channel, as separate worker processes would hold: it registers for a job type nobody
submits (so it never gets work), then sends a heartbeat every --interval seconds, the
streams' phases spread evenly over the interval. Recorded: registration time (write to
the "registration" ack) per stream and for all of them, and heartbeat -> ack latency.
Invariant: acks on one stream come in the order of its messages (the gateway handles a
stream's messages one at a time), so each heartbeat is matched with the next heartbeat
ack; an ack that is not ACCEPTED, or a stream that breaks, is counted as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from dispatchd.common import loops
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.v1 import worker_service_pb2_grpc
from perf.cpu import CpuMeter, per_job_ms, pid_arg
from perf.progress import Progress, following
from perf.stats import rate, summary_ms

CAPABILITY = "perf.worker-load.never-submitted"
REGISTER_CONCURRENCY = 50
OPTIONS = [("grpc.enable_http_proxy", 0)]


class Recorder:
    def __init__(self) -> None:
        self.registration: list[float] = []
        self.heartbeats: list[float] = []
        self.errors: Counter[str] = Counter()
        self.registered = asyncio.Event()


async def next_ack(call: Any, kind: str) -> pb.WorkerAck:
    while True:
        reply = await call.read()
        if reply is EOF:
            raise ConnectionError(f"stream ended while waiting for a {kind} ack")
        if reply.HasField("ack") and reply.ack.kind == kind:
            return reply.ack  # type: ignore[no-any-return]


async def stream(index: int, args: argparse.Namespace, gate: asyncio.Semaphore, rec: Recorder) -> None:
    worker_id = f"perf-load-{os.getpid()}-{index}"
    async with grpc.aio.insecure_channel(args.target, options=OPTIONS) as channel:
        # grpc-stubs lacks the aio call-object API (write/read/done_writing).
        call = cast(Any, worker_service_pb2_grpc.WorkerServiceStub(channel)).Connect()
        try:
            async with gate:
                started = time.perf_counter()
                await call.write(pb.ConnectRequest(registration=pb.WorkerRegistration(
                    worker_id=worker_id, capabilities=[CAPABILITY], max_concurrency=1)))  # fmt: skip
                ack = await next_ack(call, "registration")
                rec.registration.append(time.perf_counter() - started)
            if ack.status != pb.ACK_STATUS_ACCEPTED:
                rec.errors[f"registration {pb.AckStatus.Name(ack.status)}"] += 1
                return
            await rec.registered.wait()
            beat = pb.ConnectRequest(heartbeat=pb.WorkerHeartbeat(worker_id=worker_id, status=pb.WORKER_STATUS_READY))
            loop = asyncio.get_running_loop()
            first = loop.time() + args.interval * index / args.streams
            for n in range(int(args.seconds / args.interval)):
                await asyncio.sleep(max(0.0, first + n * args.interval - loop.time()))
                started = time.perf_counter()
                await call.write(beat)
                ack = await next_ack(call, "heartbeat")
                rec.heartbeats.append(time.perf_counter() - started)
                if ack.status != pb.ACK_STATUS_ACCEPTED:
                    rec.errors[f"heartbeat {pb.AckStatus.Name(ack.status)}"] += 1
            await call.done_writing()
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            name = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "stream ended"
            rec.errors[name] += 1
        finally:
            call.cancel()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder()
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
    meter = CpuMeter({**dict(args.pid), "worker-load-driver": os.getpid()})
    progress = Progress("worker-load", args.seconds)
    streams = [asyncio.create_task(stream(i, args, gate, rec)) for i in range(args.streams)]
    started = time.perf_counter()
    while len(rec.registration) + sum(rec.errors.values()) < args.streams:
        progress.show(f"registering: {len(rec.registration)}/{args.streams}")
        await asyncio.sleep(0.1)
    all_registered = time.perf_counter() - started
    meter.start()
    window = time.perf_counter()
    rec.registered.set()

    def status() -> str:
        errors = sum(rec.errors.values())
        return f"{len(rec.registration)} streams, {len(rec.heartbeats)} heartbeats acked, {errors} errors"

    await following(progress, status, asyncio.gather(*streams))
    cpu = meter.stop()
    seconds = time.perf_counter() - window
    return {
        "streams": args.streams,
        "interval_seconds": args.interval,
        "registered": len(rec.registration),
        "registration_ms": summary_ms(rec.registration),
        "all_registered_seconds": round(all_registered, 3),
        "heartbeat_ack_ms": summary_ms(rec.heartbeats),
        "heartbeats_per_second": rate(len(rec.heartbeats), seconds),
        "errors": dict(rec.errors),
        "cpu_window_seconds": round(seconds, 3),
        "cpu_seconds": cpu,
        "cpu_ms_per_heartbeat": per_job_ms(cpu, len(rec.heartbeats)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--pid", type=pid_arg, action="append", default=[], metavar="NAME=PID")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.write_text(json.dumps(loops.run(run(args)), indent=2) + "\n")


if __name__ == "__main__":
    main()
