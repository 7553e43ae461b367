"""The control plane as its own process: `python -m dispatchd.control_plane.main`."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from tests.support.processes import Spawner

pytestmark = pytest.mark.integration

SERVICE = "dispatchd.v1.JobService"


@pytest.fixture
def control_plane(
    database_url: str, redis_url: str, spawn_service: Spawner
) -> Iterator[tuple[ServiceProcess, str]]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "5",
        "DISPATCHD_LOG_JSON": "false",
    }
    process = spawn_service.service("control-plane", env)
    yield process, process.address


def test_serves_health_reflection_and_jobs(control_plane: tuple[ServiceProcess, str]) -> None:
    process, target = control_plane
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING

        assert SERVICE in ProtoReflectionDescriptorDatabase(channel).get_services()

        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        submitted = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(job_type="email.send", payload=b"hello", idempotency_key="p-1"), timeout=5
        )
        assert submitted.job.status == common_pb2.JOB_STATUS_PENDING
        got = jobs.GetJob(job_service_pb2.GetJobRequest(job_id=submitted.job.job_id), timeout=5)
        assert got.job.payload == b"hello"
        again = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(job_type="email.send", payload=b"hello", idempotency_key="p-1"), timeout=5
        )
        assert again.deduplicated and again.job.job_id == submitted.job.job_id

        with pytest.raises(grpc.RpcError) as caught:
            jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="", payload=b"x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert process.terminate(timeout=15) == 0


def test_shutdown_releases_waiting_calls(control_plane: tuple[ServiceProcess, str]) -> None:
    process, target = control_plane
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        job = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="email.send"), timeout=5).job
        request = job_service_pb2.WaitJobRequest(job_id=job.job_id)
        request.timeout.FromSeconds(120)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(jobs.WaitJob, request, timeout=130)
            time.sleep(0.5)  # the call is parked on the server
            assert not waiting.done()
            started = time.monotonic()
            assert process.terminate(timeout=15) == 0
            reply = waiting.result(timeout=10)
        assert not reply.terminal and reply.job.job_id == job.job_id
        assert time.monotonic() - started < 4  # well inside the 5 s grace period
