"""Heartbeat load: hundreds of worker streams registering and heartbeating, ack latency measured.

Starts a stack with no workers (private stores, the gateway and what it needs), opens
--streams raw Connect streams (spread over a few channels), registers each, then every
stream heartbeats once per --interval seconds (phases spread evenly, as independent
workers would be) for --seconds. Each heartbeat is timed from its write until its ack is
read. Half the streams list their running executions (as the SDK does), half do not
(reference clients), so both heartbeat paths are loaded. The gateway's CPU over the
window comes from /proc, per heartbeat and as a share of one core.

Invariant: every heartbeat sent in the window is answered ACCEPTED, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc

from dispatchd.devtools.stack import Stack, Topology
from dispatchd.sdk.connection import connect
from dispatchd.v1 import worker_service_pb2 as pb
from perf.evidence import ROOT, header, write
from perf.smoke import summary_ms

STREAMS_PER_CHANNEL = 50


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stream(
    channel: grpc.aio.Channel, index: int, args: argparse.Namespace, start_at: float, samples: list[float]
) -> None:
    call = connect(channel)
    worker_id = f"beat-{index}"
    await call.write(
        pb.ConnectRequest(
            registration=pb.WorkerRegistration(worker_id=worker_id, capabilities=["perf.heartbeat"], max_concurrency=1)
        )
    )
    ack = await call.read()
    assert ack.ack.kind == "registration" and ack.ack.status == pb.ACK_STATUS_ACCEPTED, ack
    lists = index % 2 == 0
    beat = pb.ConnectRequest(
        heartbeat=pb.WorkerHeartbeat(worker_id=worker_id, status=pb.WORKER_STATUS_READY, lists_running=lists)
    )
    # Phases spread over one interval, as independent workers' would be.
    at = start_at + args.interval * index / args.streams
    end = start_at + args.seconds
    loop = asyncio.get_running_loop()
    while at < end:
        await asyncio.sleep(max(0.0, at - loop.time()))
        sent = time.perf_counter()
        await call.write(beat)
        reply = await call.read()
        samples.append(time.perf_counter() - sent)
        if reply.ack.kind != "heartbeat" or reply.ack.status != pb.ACK_STATUS_ACCEPTED:
            raise RuntimeError(f"heartbeat of {worker_id} answered {reply}")
        at += args.interval
    await call.done_writing()


async def measure(target: str, gateway_pid: int, args: argparse.Namespace) -> dict[str, object]:
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((args.streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    warmup: list[float] = []
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        # Registration of all streams and a first round of heartbeats are not measured.
        start_at = loop.time() + 2.0
        tasks = [
            asyncio.create_task(_stream(channels[i % len(channels)], i, args, start_at, samples))
            for i in range(args.streams)
        ]
        await asyncio.sleep(start_at + args.interval - loop.time())
        warmup.extend(samples)
        samples.clear()
        cpu_before, wall_before = cpu_seconds(gateway_pid), time.perf_counter()
        await asyncio.gather(*tasks)
        cpu = cpu_seconds(gateway_pid) - cpu_before
        wall = time.perf_counter() - wall_before
    finally:
        for channel in channels:
            await channel.close(None)
    return {
        "streams": args.streams,
        "interval_seconds": args.interval,
        "heartbeats": len(samples),
        "heartbeats_per_second": round(len(samples) / wall, 1),
        "ack_latency_ms": summary_ms(samples),
        "gateway_cpu_share_of_one_core": round(cpu / wall, 3),
        "gateway_cpu_ms_per_heartbeat": round(cpu * 1000 / max(1, len(samples)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats of a stream")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    parser.add_argument("--out", type=Path, default=ROOT / "evidence" / "perf" / "heartbeats.json")
    args = parser.parse_args(argv)
    platform = Topology(workers=(), schedulers=1, settings={"DISPATCHD_LOG_LEVEL": "WARNING"}, metrics=False)
    directory = Path(tempfile.mkdtemp(prefix="dispatchd-beats-"))
    try:
        with Stack(platform, directory) as stack:
            gateway = next(p for name, p in stack.processes.items() if name.startswith("worker-gateway"))
            result = asyncio.run(measure(stack.gateway_target, gateway.pid, args))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    write(args.out, {**header("heartbeats"), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
