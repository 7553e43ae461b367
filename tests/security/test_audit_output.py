"""Finding 9 with a real control plane: audit lines at the default level, none at `off`, none lost at SIGTERM.

The calls are answered only after their audit record is queued, and the service is stopped
(SIGTERM) the moment the last answer arrives, so records still in the queue then must be
written out by the shutdown, not dropped with the process.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from dispatchd.devtools.stack import ServiceProcess
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.processes import Spawner

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CALLS = 200


def _control_plane(spawn_service: Spawner, database_url: str, redis_url: str, **settings: str) -> ServiceProcess:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
        **{f"DISPATCHD_{key.upper()}": value for key, value in settings.items()},
    }
    return spawn_service.service("control-plane", env)


def _calls_then_sigterm(process: ServiceProcess, prefix: str) -> list[dict[str, object]]:
    """CALLS refused GetJobs (request ids `prefix-N`), SIGTERM at once, then the lines it logged."""
    with grpc.insecure_channel(process.address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        for n in range(CALLS):
            with pytest.raises(grpc.RpcError):
                jobs.GetJob(
                    job_service_pb2.GetJobRequest(job_id="not-a-uuid"),
                    metadata=[("x-request-id", f"{prefix}-{n}")],
                    timeout=5,
                )
    assert process.terminate(timeout=20) == 0
    text = process.log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_audited_calls_are_all_written_before_exit(spawn_service: Spawner, database_url: str, redis_url: str) -> None:
    process = _control_plane(spawn_service, database_url, redis_url)
    prefix = f"req-{uuid.uuid4().hex[:8]}"
    lines = _calls_then_sigterm(process, prefix)
    audited = [line for line in lines if line["logger"] == "dispatchd.audit"]
    assert [line["request_id"] for line in audited] == [f"{prefix}-{n}" for n in range(CALLS)]
    assert all(line["code"] == "INVALID_ARGUMENT" and line["event"] == "call" for line in audited)
    assert lines[-1]["msg"] == "control-plane stopped"  # and the service's own last line too


def test_audit_level_off_writes_no_audit_line(spawn_service: Spawner, database_url: str, redis_url: str) -> None:
    process = _control_plane(spawn_service, database_url, redis_url, audit_level="off")
    lines = _calls_then_sigterm(process, f"req-{uuid.uuid4().hex[:8]}")
    assert not [line for line in lines if line["logger"] == "dispatchd.audit"]
    assert lines[-1]["msg"] == "control-plane stopped"
