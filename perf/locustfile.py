"""Locust gRPC users against the control plane: a submit, get, list and wait mix of perf.noop jobs.

    python -m locust -f perf/locustfile.py --headless --host 127.0.0.1:50051 -u 20 -r 20 -t 15s

Run only in a process of its own (perf.locust_run starts one): `import locust` patches the
standard library with gevent, and `init_gevent()` must then run before any channel exists,
so gRPC cooperates with the greenlets instead of blocking them. Every call is reported to
locust as a request of type "grpc" named by its method, a failed call with its status code.
"""

# ruff: noqa: E402, I001  (the import order below is the point: gevent first, then gRPC set up for it)
from __future__ import annotations

import locust  # first: it monkey-patches the standard library with gevent
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2

from dispatchd.v1 import job_service_pb2 as jobs
from dispatchd.v1 import job_service_pb2_grpc
from perf.noop import JOB_TYPE

RECENT = 64  # job ids a user remembers for get and wait
WAIT = duration_pb2.Duration(seconds=5)


class ControlPlaneUser(locust.User):
    wait_time = locust.constant(0)

    def on_start(self) -> None:
        assert self.host, "locust --host is the control plane address"
        self.channel = grpc.insecure_channel(self.host, options=[("grpc.enable_http_proxy", 0)])
        self.stub = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.submit()  # get and wait need an id

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, name: str, rpc: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        reply, error = None, None
        try:
            reply = rpc()
        except grpc.RpcError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0 if reply is None else reply.ByteSize(),
            exception=error,
            context={},
        )
        return reply

    @locust.task(4)
    def submit(self) -> None:
        request = jobs.SubmitJobRequest(job_type=JOB_TYPE, payload=b"locust")
        reply = self.call("SubmitJob", lambda: self.stub.SubmitJob(request, timeout=30))
        if reply is not None:
            self.recent.append(reply.job.job_id)

    @locust.task(3)
    def get(self) -> None:
        if self.recent:
            request = jobs.GetJobRequest(job_id=self.recent[-1])
            self.call("GetJob", lambda: self.stub.GetJob(request, timeout=30))

    @locust.task(1)
    def list(self) -> None:
        request = jobs.ListJobsRequest(job_type=JOB_TYPE, page_size=20)
        self.call("ListJobs", lambda: self.stub.ListJobs(request, timeout=30))

    @locust.task(2)
    def wait(self) -> None:
        if self.recent:
            request = jobs.WaitJobRequest(job_id=self.recent[0], timeout=WAIT)
            self.call("WaitJob", lambda: self.stub.WaitJob(request, timeout=30))
