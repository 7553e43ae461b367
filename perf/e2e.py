"""The dispatchd end-to-end driver (its own process): one phase of perf.noop jobs, timed from Postgres.

    python -m perf.e2e --phase open|saturation|bulk --submit single|batch --target CP --database-url URL ...

How phases run is perf.phase's (the same for Celery); this is dispatchd's side of it:
submitting with one SubmitJob per job or BatchSubmitJobs per --batch-size jobs, from one
client; the backlog is the queued executions; after the run all timestamps come from one
query: executions.claimed_at (attempt 1), the handler's own start and end (its result) and
jobs.finished_at. Invariant: every accepted job keeps the wall time at which the call
carrying it was sent; every refusal (an RPC error, a per-job code in a batch reply) is
counted by status code name, never retried. A server that does not serve BatchSubmitJobs
makes a batch phase `skipped`, with the reason.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
import grpc

from dispatchd.common import loops
from dispatchd.platform.db import asyncpg_dsn
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from perf.journeys import Journey, handler_times
from perf.noop import JOB_TYPE
from perf.phase import Side, measure, phase_arguments

REQUEST = job_service_pb2.SubmitJobRequest(job_type=JOB_TYPE, payload=b"perf")
# google.rpc code numbers (a batch reply's per-job `code`) by name.
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
JOURNEYS_SQL = """
SELECT j.job_id::text AS job_id, j.status, extract(epoch FROM j.finished_at)::float8 AS recorded,
       extract(epoch FROM e.claimed_at)::float8 AS claimed, j.result
  FROM jobs j LEFT JOIN executions e ON e.job_id = j.job_id AND e.attempt = 1
 WHERE j.job_id = ANY($1::uuid[])
"""


class BatchUnsupported(RuntimeError):
    """The control plane does not serve BatchSubmitJobs (its answer to a probe says so)."""


class Dispatchd(Side):
    def __init__(
        self, stub: job_service_pb2_grpc.JobServiceAsyncStub, pool: asyncpg.Pool, batch: int, pids: Mapping[str, int]
    ) -> None:
        super().__init__(pids, "e2e-driver", per_call=batch or 1)
        self.stub = stub
        self.pool = pool
        self.batch = batch  # 0: single SubmitJob calls

    async def submit(self) -> None:
        sent, started = time.time(), time.perf_counter()
        try:
            if not self.batch:
                reply = await self.stub.SubmitJob(REQUEST, timeout=30)
                self.sent[reply.job.job_id] = sent
            else:
                request = job_service_pb2.BatchSubmitJobsRequest(jobs=[REQUEST] * self.batch)
                for result in (await self.stub.BatchSubmitJobs(request, timeout=60)).results:
                    if result.code == 0:
                        self.sent[result.job_id] = sent
                    else:
                        self.errors[CODE_NAMES.get(result.code, str(result.code))] += 1
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += self.per_call
            return
        self.call_seconds.append(time.perf_counter() - started)

    async def probe_batch(self) -> None:
        """One one-job batch: raises BatchUnsupported before a run when the server lacks the RPC
        (an older control plane targeted with --target answers UNIMPLEMENTED)."""
        try:
            await self.stub.BatchSubmitJobs(job_service_pb2.BatchSubmitJobsRequest(jobs=[REQUEST]), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise BatchUnsupported(f"BatchSubmitJobs not served: {exc.code().name} ({exc.details()})") from None
            raise

    async def backlog(self) -> int:
        sql = "SELECT count(*) FROM executions WHERE status = $1"
        return int(await self.pool.fetchval(sql, ExecutionStatus.QUEUED))

    async def ended(self, ids: list[str]) -> int:
        sql = "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) AND finished_at IS NOT NULL"
        return int(await self.pool.fetchval(sql, ids))

    async def journeys(self) -> list[Journey]:
        found = []
        for row in await self.pool.fetch(JOURNEYS_SQL, list(self.sent)):
            start, end = handler_times(row["result"])
            succeeded = row["status"] == JobStatus.SUCCEEDED
            found.append(Journey(self.sent[row["job_id"]], succeeded, row["claimed"], start, end, row["recorded"]))
        return found


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": args.phase, "submit": args.submit}
    pool = await asyncpg.create_pool(asyncpg_dsn(args.database_url), min_size=1, max_size=2)
    try:
        async with grpc.aio.insecure_channel(args.target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub: job_service_pb2_grpc.JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            side = Dispatchd(stub, pool, args.batch_size if args.submit == "batch" else 0, dict(args.pid))
            if args.submit == "batch":
                try:
                    await side.probe_batch()
                except BatchUnsupported as exc:
                    return result | {"skipped": str(exc)}
            return result | await measure(side, args, f"{args.phase}/{args.submit}")
    finally:
        await pool.close()


def main() -> None:
    p = phase_arguments(__doc__.split("\n")[0])
    p.add_argument("--submit", choices=["single", "batch"], default="single")
    p.add_argument("--target", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--batch-size", type=int, default=200)
    args = p.parse_args()
    args.out.write_text(json.dumps(loops.run(main_async(args)), indent=2) + "\n")


if __name__ == "__main__":
    main()
