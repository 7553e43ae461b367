"""What the building blocks of one job cost on this machine, measured alone: the floor under dispatchd's figures.

    python -m perf.floor [--seconds S] [--out evidence/perf/floor.json]     (make perf-floor)

Three measurements, each with nothing of dispatchd around it, so a target can be checked
against what Python, gRPC and Postgres cost here before anyone tries to beat it:

- **gRPC**: a grpc.aio server (uvloop, no interceptors, its own process) whose SubmitJob
  answers a prebuilt reply, called with dispatchd's own SubmitJobRequest: client-observed
  latency at 100 calls/s (open loop), calls/s with 64 in flight (closed loop), and the
  server's CPU per call in both. That is a control plane with no work in it.
- **Postgres** (private, fsync on, the real schema): round trips one at a time on one
  connection: `SELECT 1`, a one-row INSERT committed with `synchronous_commit` on and off
  (the price of the WAL flush), and dispatchd's own submit statement for one job.
- **Redis** (private): one pipeline of the two commands a submit sends per group.

Then it sets dispatchd's measured figures (evidence/perf/smoke.json, when present: which
commit it measured is copied with it) beside the floor. Invariant: every figure is measured
by this run or copied from a named evidence file with its commit; none is typed in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis

from dispatchd.common import loops
from dispatchd.devtools.stack.backing import Backing
from dispatchd.devtools.stack.topology import Stores
from dispatchd.devtools.stores import free_port
from dispatchd.platform.db import create_pool
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store.submits import NewJob, submit_all
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from perf import provenance
from perf.cpu import read_stat
from perf.evidence import ROOT, header
from perf.load import Gate, open_loop, saturate
from perf.stats import rate, summary_ms

OPEN_RATE = 100.0
WINDOW = 64
ROUND_TRIPS = 2000
REQUEST = job_service_pb2.SubmitJobRequest(job_type="perf.noop", payload=b"perf")


class Answering(job_service_pb2_grpc.JobServiceServicer):
    """SubmitJob with nothing behind it: one reply, built once."""

    def __init__(self) -> None:
        job = common_pb2.Job(
            job_id=str(uuid.uuid4()), job_type="perf.noop", payload=b"perf", status=common_pb2.JOB_STATUS_PENDING
        )
        self.reply = job_service_pb2.SubmitJobResponse(job=job)

    async def SubmitJob(  # noqa: N802
        self, request: job_service_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> job_service_pb2.SubmitJobResponse:
        return self.reply


async def serve(port: int) -> None:
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(Answering(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def cpu_seconds(pid: int) -> float:
    stat = read_stat(pid)
    return 0.0 if stat is None else stat.ticks / os.sysconf("SC_CLK_TCK")


async def nothing_queued() -> int:
    """A bare server queues nothing: the closed loop's gate never holds a caller back."""
    return 0


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[int, int]]:
    """The bare SubmitJob server in its own process, serving: its port and pid."""
    port = free_port()
    argv = [sys.executable, "-m", "perf.floor", "--serve", str(port)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT) as server:
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"serving":
                raise RuntimeError("the bare gRPC server did not start")
            yield port, server.pid
        finally:
            server.terminate()
            server.wait(10)


async def grpc_floor(seconds: float, port: int, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)

        async def call() -> None:
            await stub.SubmitJob(REQUEST, timeout=10)

        async def timed_call() -> None:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

        await saturate(WINDOW, 1.0, call, Gate(nothing_queued, sys.maxsize))  # warm: connections, code paths
        before = cpu_seconds(pid)
        await open_loop(OPEN_RATE, seconds, timed_call)
        open_cpu, open_calls = cpu_seconds(pid) - before, len(latencies)
        before = cpu_seconds(pid)
        elapsed = await saturate(WINDOW, seconds, timed_call, Gate(nothing_queued, sys.maxsize))
        closed_cpu, calls = cpu_seconds(pid) - before, len(latencies) - open_calls
    return {
        "what": "grpc.aio unary SubmitJob answered with a prebuilt reply (uvloop, no interceptors), own process",
        f"open_{OPEN_RATE:g}_per_second": {
            "latency_ms": summary_ms(latencies[:open_calls]),
            "server_cpu_ms_per_call": round(open_cpu * 1000 / open_calls, 3),
        },
        f"closed_{WINDOW}_in_flight": {
            "calls_per_second": rate(calls, elapsed),
            "latency_ms": summary_ms(latencies[open_calls:]),
            "server_cpu_ms_per_call": round(closed_cpu * 1000 / calls, 3),
        },
    }


async def timed(call: Callable[[], Awaitable[Any]], times: int = ROUND_TRIPS) -> dict[str, float | int]:
    latencies = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return summary_ms(latencies)


async def postgres_floor(database_url: str) -> dict[str, Any]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    new = NewJob("perf.floor", b"perf", 0, None, {}, RetryPolicy(), False)
    figures: dict[str, Any] = {}
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE floor_rows (n int)")
            figures["select_1_ms"] = await timed(lambda: conn.execute("SELECT 1"))
            for setting in ("on", "off"):
                await conn.execute(f"SET synchronous_commit = {setting}")
                figures[f"insert_one_row_commit_sync_{setting}_ms"] = await timed(
                    lambda: conn.execute("INSERT INTO floor_rows VALUES (1)")
                )
            await conn.execute("RESET synchronous_commit")
            figures["dispatchd_submit_statement_one_job_ms"] = await timed(lambda: submit_all(conn, [new]))
            await conn.execute("DROP TABLE floor_rows")
    finally:
        await pool.close()
    return {"what": "one connection, one round trip at a time, fsync on", **figures}


async def redis_floor(redis_url: str) -> dict[str, Any]:
    client = aioredis.from_url(redis_url)

    async def pipeline() -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.zadd("floor:queue", {uuid.uuid4().hex: 0})
            pipe.publish("floor:events", b"x")
            await pipe.execute()

    try:
        return {
            "what": "one connection",
            "ping_ms": await timed(client.ping),
            "zadd_publish_pipeline_ms": await timed(pipeline),
        }
    finally:
        await client.aclose()


def dispatchd_figures(smoke: Path) -> dict[str, Any] | None:
    """The figures of the last perf smoke to set beside the floor (with the commit it measured)."""
    if not smoke.exists():
        return None
    data = json.loads(smoke.read_text())
    phases = data["end_to_end"]
    return {
        "source": str(smoke.relative_to(ROOT)) if smoke.is_relative_to(ROOT) else str(smoke),
        "commit": data["commit"],
        "open_single_submit_call_ms": phases["open/single"]["call_latency_ms"],
        "open_single_submit_to_handler_done_ms": phases["open/single"]["submit_to_handler_done_ms"],
        "saturation_single_control_plane_cpu_ms_per_job": phases["saturation/single"]["cpu_ms_per_job"][
            "control-plane"
        ],
        "locust_submit_job_calls_per_second": data["locust"]["by_method"]["SubmitJob"]["per_second"],
    }


async def measure(
    args: argparse.Namespace, database_url: str, redis_url: str, server: tuple[int, int]
) -> dict[str, Any]:
    return {
        "grpc": await grpc_floor(args.seconds, *server),
        "postgres": await postgres_floor(database_url),
        "redis": await redis_floor(redis_url),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="each gRPC phase (default %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "evidence/perf/floor.json")
    p.add_argument("--smoke", type=Path, default=ROOT / "evidence/perf/smoke.json", help="dispatchd's figures")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the bare server's own process
    return p


def say(line: str) -> None:
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.serve:
        loops.run(serve(args.serve))
        return 0
    with tempfile.TemporaryDirectory(prefix="dispatchd-floor-") as tmp:
        backing = Backing(Stores(fast_postgres=False), Path(tmp), Path(tmp), say=say)
        backing.start()
        try:
            with bare_server() as server:
                figures = loops.run(measure(args, backing.database_url, backing.redis_url, server))
        finally:
            with contextlib.suppress(Exception):
                backing.stop()
    # The header's short commit replaced by the sha with its dirty flag, as every perf file records it.
    evidence = {**header("floor"), "commit": provenance.commit(), **figures, "dispatchd": dispatchd_figures(args.smoke)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(evidence, indent=2) + "\n")
    print(json.dumps(evidence, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
