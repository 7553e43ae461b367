"""The proof that a stack works: one `builtin.echo` job from submit to SUCCEEDED with its payload back."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools.stack.health import CHANNEL_OPTIONS
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc

CHECK_TIMEOUT = 60.0
PAYLOAD = b"dispatchd up --check"


class CheckFailed(RuntimeError):
    """The job did not succeed with its payload as result."""


def run_check(control_plane: str, security: ClientSecurity | None = None) -> float:
    """Submit one builtin.echo job and wait for it; returns submit-to-succeeded seconds."""
    security = security or ClientSecurity()
    metadata = security.metadata()
    with security.sync_channel(control_plane, options=CHANNEL_OPTIONS) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        started = time.perf_counter()
        request = job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=PAYLOAD)
        job = jobs.SubmitJob(request, timeout=10, metadata=metadata).job
        wait = duration_pb2.Duration(seconds=int(CHECK_TIMEOUT))
        reply = jobs.WaitJob(
            job_service_pb2.WaitJobRequest(job_id=job.job_id, timeout=wait),
            timeout=CHECK_TIMEOUT + 5,
            metadata=metadata,
        )
        job = reply.job
        elapsed = time.perf_counter() - started
    if job.status != common_pb2.JOB_STATUS_SUCCEEDED or job.result != PAYLOAD:
        status = common_pb2.JobStatus.Name(job.status)
        raise CheckFailed(f"check job {job.job_id} ended {status} ({job.error_message or 'no error'})")
    return elapsed
