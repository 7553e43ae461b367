"""Every RPC x every role against the secured stack: allowed, PERMISSION_DENIED or UNAUTHENTICATED.

The expected matrix is written out here from the issue's role definitions (not derived from
the table it checks). "Allowed" means the call got past authorization: it may still fail on
its own terms (NOT_FOUND for an unknown job id), but never with an auth status.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import job_service_pb2, observe_pb2, worker_service_pb2
from tests.support.security import Credentials, SecureStack
from tests.support.streams import WorkerStream, first_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"]
READERS = {"submitter", "viewer", "operator", "admin"}
EXPECTED_JOB_SERVICE: dict[str, set[str]] = {
    "SubmitJob": {"submitter", "operator", "admin"},
    "BatchSubmitJobs": {"submitter", "operator", "admin"},
    "GetJob": READERS,
    "ListJobs": READERS,
    "ListExecutions": READERS,
    "WaitJob": READERS,
    "CancelJob": {"operator", "admin"},
    "ListDeadLetters": {"viewer", "operator", "admin"},
    "RedriveJobs": {"operator", "admin"},
    # Observe (observe.proto): a job's logs are read like the job; the rest is cluster-wide.
    "ListLogs": READERS,
    "FollowLogs": READERS,
    "ListWorkers": {"viewer", "operator", "admin"},
    "GetQueueStats": {"viewer", "operator", "admin"},
    "GetClusterStatus": {"viewer", "operator", "admin"},
    "WatchJobs": {"viewer", "operator", "admin"},
}
EXPECTED_CONNECT = {"worker", "service"}
# A token with each role; plus a token with no role and one with a role nobody knows.
PRINCIPALS: dict[str, tuple[str, ...]] = {
    "submitter": ("submitter",),
    "viewer": ("viewer",),
    "operator": ("operator",),
    "admin": ("admin",),
    "worker": ("worker",),
    "service": ("service",),
    "no-role": (),
    "unknown-role": ("superuser",),
}
AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def _request(method: str) -> Message:
    """A well-formed request that passes validation; unknown job ids make it harmless."""
    unknown = str(uuid.uuid4())
    requests: dict[str, Message] = {
        "SubmitJob": job_service_pb2.SubmitJobRequest(job_type="sec.matrix", payload=b"m"),
        "BatchSubmitJobs": job_service_pb2.BatchSubmitJobsRequest(
            jobs=[job_service_pb2.SubmitJobRequest(job_type="sec.matrix", payload=b"m")]
        ),
        "GetJob": job_service_pb2.GetJobRequest(job_id=unknown),
        "ListJobs": job_service_pb2.ListJobsRequest(page_size=5),
        "ListExecutions": job_service_pb2.ListExecutionsRequest(job_id=unknown),
        "WaitJob": job_service_pb2.WaitJobRequest(job_id=unknown),
        "CancelJob": job_service_pb2.CancelJobRequest(job_id=unknown),
        "ListLogs": observe_pb2.ListLogsRequest(job_id=unknown),
        "FollowLogs": observe_pb2.FollowLogsRequest(job_id=unknown),
        "ListWorkers": observe_pb2.ListWorkersRequest(),
        "GetQueueStats": observe_pb2.GetQueueStatsRequest(),
        "GetClusterStatus": observe_pb2.GetClusterStatusRequest(),
        "WatchJobs": observe_pb2.WatchJobsRequest(),
    }
    if method in requests:
        return requests[method]
    # Methods added later: their default request (validation may refuse it, which is fine).
    descriptor = JOB_SERVICE.methods_by_name[method].input_type
    cls: Any = getattr(job_service_pb2, descriptor.name)
    request: Message = cls()
    if "job_ids" in descriptor.fields_by_name:
        request.job_ids.append(unknown)  # type: ignore[attr-defined]
    return request


def _call(stack: SecureStack, method: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    stub = stack.jobs()
    try:
        reply = getattr(stub, method)(_request(method), metadata=metadata, timeout=10)
        if JOB_SERVICE.methods_by_name[method].server_streaming:
            first_of(reply)  # a stream answers (or fails) with its first message
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_the_expected_matrix_names_every_job_service_method() -> None:
    assert set(JOB_SERVICE.methods_by_name) == set(EXPECTED_JOB_SERVICE)


@pytest.mark.parametrize("method", sorted(EXPECTED_JOB_SERVICE))
def test_job_service_method_by_role(secure_stack: SecureStack, creds: Credentials, method: str) -> None:
    outcomes: dict[str, grpc.StatusCode] = {}
    for name, roles in PRINCIPALS.items():
        token = creds.token(f"matrix-{name}", *roles)
        outcomes[name] = _call(secure_stack, method, [("authorization", f"Bearer {token}")])
    outcomes["no-token"] = _call(secure_stack, method, [])
    for name, code in outcomes.items():
        if name == "no-token":
            assert code is grpc.StatusCode.UNAUTHENTICATED, (method, name, code)
        elif name in EXPECTED_JOB_SERVICE[method]:
            assert code not in AUTH_CODES, (method, name, code)
        else:
            assert code is grpc.StatusCode.PERMISSION_DENIED, (method, name, code)


async def _connect(stack: SecureStack, creds: Credentials, roles: tuple[str, ...] | None) -> grpc.StatusCode:
    token = None if roles is None else creds.token("worker-a", *roles)
    stream = WorkerStream(stack.gateway, creds.worker("worker-a", token))
    try:
        await stream.offer("worker-a", ["sec.test"])
        message = await stream.reply()
        if message is not None and message.WhichOneof("payload") == "ack":
            assert message.ack.status == worker_service_pb2.ACK_STATUS_ACCEPTED, message
            return grpc.StatusCode.OK
        return await stream.ended()
    finally:
        await stream.close()


async def test_worker_connect_by_role(secure_stack: SecureStack, creds: Credentials) -> None:
    for name, roles in PRINCIPALS.items():
        code = await _connect(secure_stack, creds, roles)
        expected = grpc.StatusCode.OK if name in EXPECTED_CONNECT else grpc.StatusCode.PERMISSION_DENIED
        assert code is expected, (name, code)
        await asyncio.sleep(0)  # the same worker id registers again next: let the old stream end
    assert await _connect(secure_stack, creds, None) is grpc.StatusCode.UNAUTHENTICATED


def test_health_is_public_on_every_port(secure_stack: SecureStack, creds: Credentials) -> None:
    for target in (secure_stack.control_plane, secure_stack.gateway):
        # TLS with a client certificate, no token at all.
        stub = health_pb2_grpc.HealthStub(secure_stack.channel(creds.client("bob"), target))
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    for target in secure_stack.health.values():
        # The probe port: plaintext, health only.
        channel = secure_stack.channel(ClientSecurity(), target)
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/dispatchd.v1.JobService/ListJobs")(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def _reflect(stack: SecureStack, creds: Credentials, token: str | None) -> grpc.StatusCode:
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel(creds.client("admin-cli")))
    metadata = [("authorization", f"Bearer {token}")] if token else []
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        replies = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=5))
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    assert replies and replies[0].list_services_response.service
    return grpc.StatusCode.OK


def test_reflection_is_admin_only(secure_stack: SecureStack, creds: Credentials) -> None:
    assert _reflect(secure_stack, creds, creds.token("root", "admin")) is grpc.StatusCode.OK
    for role in ("viewer", "operator", "submitter", "worker", "service"):
        assert _reflect(secure_stack, creds, creds.token("x", role)) is grpc.StatusCode.PERMISSION_DENIED, role
    assert _reflect(secure_stack, creds, None) is grpc.StatusCode.UNAUTHENTICATED


def test_submitters_see_only_their_own_jobs(secure_stack: SecureStack, creds: Credentials) -> None:
    stub = secure_stack.jobs()
    alice = [("authorization", f"Bearer {creds.token('alice', 'submitter')}")]
    bob = [("authorization", f"Bearer {creds.token('bob', 'submitter')}")]
    viewer = [("authorization", f"Bearer {creds.token('vera', 'viewer')}")]
    mine = stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="sec.own"), metadata=alice, timeout=10).job
    theirs = stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="sec.own"), metadata=bob, timeout=10).job

    assert stub.GetJob(job_service_pb2.GetJobRequest(job_id=mine.job_id), metadata=alice, timeout=5).job == mine
    listed = stub.ListJobs(job_service_pb2.ListJobsRequest(job_type="sec.own"), metadata=alice, timeout=5).jobs
    assert [j.job_id for j in listed] == [mine.job_id]
    executions = stub.ListExecutions(
        job_service_pb2.ListExecutionsRequest(job_id=mine.job_id), metadata=alice, timeout=5
    ).executions
    assert len(executions) == 1

    # Someone else's job reads as if it did not exist.
    for call, request in (
        (stub.GetJob, job_service_pb2.GetJobRequest(job_id=theirs.job_id)),
        (stub.ListExecutions, job_service_pb2.ListExecutionsRequest(job_id=theirs.job_id)),
        (stub.WaitJob, job_service_pb2.WaitJobRequest(job_id=theirs.job_id)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=alice, timeout=5)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert "not found" in (err.value.details() or "")

    # Readers with the viewer role see everyone's.
    seen = stub.ListJobs(job_service_pb2.ListJobsRequest(job_type="sec.own"), metadata=viewer, timeout=5).jobs
    assert {j.job_id for j in seen} == {mine.job_id, theirs.job_id}


def test_a_batch_is_submitted_by_its_caller_and_keys_are_per_submitter(
    secure_stack: SecureStack, creds: Credentials
) -> None:
    stub = secure_stack.jobs()
    alice = [("authorization", f"Bearer {creds.token('alice', 'submitter')}")]
    bob = [("authorization", f"Bearer {creds.token('bob', 'submitter')}")]
    batch = job_service_pb2.BatchSubmitJobsRequest(
        jobs=[job_service_pb2.SubmitJobRequest(job_type="sec.batch", idempotency_key="shared-key")]
    )
    (hers,) = stub.BatchSubmitJobs(batch, metadata=alice, timeout=10).results
    (his,) = stub.BatchSubmitJobs(batch, metadata=bob, timeout=10).results
    # One key, two submitters: two jobs, neither deduplicated against the other's.
    assert (hers.code, his.code, hers.deduplicated, his.deduplicated) == (0, 0, False, False)
    assert hers.job_id != his.job_id
    listed = stub.ListJobs(job_service_pb2.ListJobsRequest(job_type="sec.batch"), metadata=alice, timeout=5).jobs
    assert [j.job_id for j in listed] == [hers.job_id]
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(job_service_pb2.GetJobRequest(job_id=his.job_id), metadata=alice, timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
