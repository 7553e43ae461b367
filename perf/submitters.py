"""How the dispatchd end-to-end driver submits: one SubmitJob per job, or BatchSubmitJobs per batch.

Invariant: every accepted job's id is kept with the wall time (time.time()) at which the
call carrying it was sent, so journeys start at the client; every refusal (an RPC error,
or a per-job code in a batch reply) is counted by its status code name and never retried,
so the error counts are what the load saw.
"""

from __future__ import annotations

import time
from collections import Counter

import grpc

from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from perf.noop import JOB_TYPE

REQUEST = job_service_pb2.SubmitJobRequest(job_type=JOB_TYPE, payload=b"perf")
# google.rpc code numbers (a batch reply's per-job `code`) by name.
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class BatchUnsupported(RuntimeError):
    """The control plane does not serve BatchSubmitJobs (its answer to a probe says so)."""


class Submitter:
    def __init__(self, stub: job_service_pb2_grpc.JobServiceAsyncStub, batch_size: int = 1) -> None:
        self.stub = stub
        self.batch_size = batch_size
        self.sent: dict[str, float] = {}  # job id -> when the call carrying it was sent
        self.errors: Counter[str] = Counter()
        self.call_seconds: list[float] = []

    @property
    def accepted(self) -> int:
        return len(self.sent)

    async def single(self) -> None:
        sent, started = time.time(), time.perf_counter()
        try:
            reply = await self.stub.SubmitJob(REQUEST, timeout=30)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            return
        self.call_seconds.append(time.perf_counter() - started)
        self.sent[reply.job.job_id] = sent

    async def batch(self) -> None:
        request = job_service_pb2.BatchSubmitJobsRequest(jobs=[REQUEST] * self.batch_size)
        sent, started = time.time(), time.perf_counter()
        try:
            reply = await self.stub.BatchSubmitJobs(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += len(request.jobs)
            return
        self.call_seconds.append(time.perf_counter() - started)
        for result in reply.results:
            if result.code == 0:
                self.sent[result.job_id] = sent
            else:
                self.errors[CODE_NAMES.get(result.code, str(result.code))] += 1

    async def probe_batch(self) -> None:
        """One one-job batch: raises BatchUnsupported before a run when the server lacks the RPC.

        A servicer that does not override the generated method raises NotImplementedError,
        which the error interceptor answers as INTERNAL, not UNIMPLEMENTED: the probe takes
        either as "not served" (and says which); during the run, both count as errors.
        """
        request = job_service_pb2.BatchSubmitJobsRequest(jobs=[REQUEST])
        try:
            await self.stub.BatchSubmitJobs(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL):
                raise BatchUnsupported(f"BatchSubmitJobs not served: {exc.code().name} ({exc.details()})") from None
            raise
