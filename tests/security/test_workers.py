"""Worker identity: token subject, certificate and worker_id must agree; a worker settles only its own work.

Also the per-identity stream limit and the audit lines a stream leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest

from dispatchd.common.security import ClientSecurity
from dispatchd.v1 import common_pb2, job_service_pb2
from dispatchd.v1 import worker_service_pb2 as wpb
from tests.support.polling import eventually
from tests.support.security import Credentials, SecureStack
from tests.support.streams import WorkerStream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ACCEPTED = wpb.ACK_STATUS_ACCEPTED


async def _register(stack: SecureStack, security: ClientSecurity, worker_id: str, capability: str = "sec.id"
                    ) -> tuple[WorkerStream, grpc.StatusCode, str]:
    stream = WorkerStream(stack.gateway, security)
    await stream.offer(worker_id, [capability])
    message = await stream.reply()
    if message is not None and message.WhichOneof("payload") == "ack" and message.ack.status == ACCEPTED:
        return stream, grpc.StatusCode.OK, ""
    return stream, await stream.ended(), await stream.details()


async def test_worker_identity_must_match_token_and_certificate(secure_stack: SecureStack, creds: Credentials) -> None:
    worker_a = creds.token("worker-a", "worker")
    cases = [
        # (description, client security, registered worker id, expected, words in the refusal)
        ("all agree", creds.worker("worker-a", worker_a), "worker-a", grpc.StatusCode.OK, ""),
        ("another worker's certificate", creds.worker("worker-b", worker_a), "worker-a",
         grpc.StatusCode.PERMISSION_DENIED, "certificate does not name worker 'worker-a'"),
        ("registers as someone else", creds.worker("worker-a", worker_a), "worker-b",
         grpc.StatusCode.PERMISSION_DENIED, "does not match the token subject 'worker-a'"),
        ("token of another worker", creds.worker("worker-a", creds.token("worker-b", "worker")), "worker-b",
         grpc.StatusCode.PERMISSION_DENIED, "certificate does not name worker 'worker-b'"),
        ("a person's certificate", creds.client("admin-cli", worker_a), "worker-a",
         grpc.StatusCode.PERMISSION_DENIED, "certificate does not name"),
        ("service role: any worker id, any certificate", creds.client("admin-cli", creds.token("pool", "service")),
         "pool-worker-17", grpc.StatusCode.OK, ""),
        ("an admin is not a worker", creds.worker("worker-a", creds.token("worker-a", "admin")), "worker-a",
         grpc.StatusCode.PERMISSION_DENIED, "may not call WorkerService.Connect"),
    ]
    for name, security, worker_id, expected, words in cases:
        stream, code, details = await _register(secure_stack, security, worker_id)
        try:
            assert code is expected, (name, code, details)
            assert words in details, (name, details)
        finally:
            await stream.close()


async def test_results_and_heartbeats_only_for_owned_executions(secure_stack: SecureStack, creds: Credentials) -> None:
    capability = f"sec.owned{uuid.uuid4().hex[:6]}"
    owner, code, _ = await _register(
        secure_stack, creds.worker("worker-a", creds.token("worker-a", "worker")), "worker-a", capability
    )
    thief: WorkerStream | None = None
    try:
        assert code is grpc.StatusCode.OK
        admin = [("authorization", f"Bearer {creds.token('root', 'admin')}")]
        jobs = secure_stack.jobs()
        job = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(job_type=capability, payload=b"p"), metadata=admin, timeout=10
        ).job
        assignment = await owner.expect("assignment", 10)
        assert assignment.job_id == job.job_id

        # Another authenticated worker, running the same job type, tries to settle it.
        thief, code, _ = await _register(
            secure_stack, creds.worker("worker-b", creds.token("worker-b", "worker")), "worker-b", capability
        )
        assert code is grpc.StatusCode.OK
        await thief.send(result=wpb.TaskResult(execution_id=assignment.execution_id, success=True, result=b"stolen"))
        assert (await thief.expect("ack", 10, ack_kind="result")).status == wpb.ACK_STATUS_STALE
        await thief.send(started=wpb.TaskStarted(execution_id=assignment.execution_id))
        assert (await thief.expect("ack", 10, ack_kind="started")).status == wpb.ACK_STATUS_STALE
        await thief.send(heartbeat=wpb.WorkerHeartbeat(worker_id="worker-a"))
        assert (await thief.expect("ack", 10, ack_kind="heartbeat")).status == wpb.ACK_STATUS_REJECTED

        request = job_service_pb2.GetJobRequest(job_id=job.job_id)
        assert jobs.GetJob(request, metadata=admin, timeout=5).job.status != common_pb2.JOB_STATUS_SUCCEEDED

        await owner.send(result=wpb.TaskResult(execution_id=assignment.execution_id, success=True, result=b"mine"))
        assert (await owner.expect("ack", 10, ack_kind="result")).status == ACCEPTED
        finished = jobs.GetJob(request, metadata=admin, timeout=5).job
        assert finished.status == common_pb2.JOB_STATUS_SUCCEEDED
        assert finished.result == b"mine"
    finally:
        await owner.close()
        if thief is not None:
            await thief.close()


async def test_open_streams_per_identity_are_limited(secure_stack: SecureStack, creds: Credentials) -> None:
    # The module's stack allows 3 streams per identity.
    security = creds.client("admin-cli", creds.token(f"pool-{uuid.uuid4().hex[:6]}", "service"))
    streams = []
    try:
        for i in range(3):
            stream, code, _ = await _register(secure_stack, security, f"limited-{i}")
            streams.append(stream)
            assert code is grpc.StatusCode.OK
        extra, code, details = await _register(secure_stack, security, "limited-3")
        streams.append(extra)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 open worker streams" in details
        # Another identity is not affected.
        worker_b = creds.worker("worker-b", creds.token("worker-b", "worker"))
        other, code, _ = await _register(secure_stack, worker_b, "worker-b")
        streams.append(other)
        assert code is grpc.StatusCode.OK
        # Closing one frees its slot.
        await streams[0].close()
        await asyncio.sleep(0.5)
        again, code, _ = await _register(secure_stack, security, "limited-4")
        streams.append(again)
        assert code is grpc.StatusCode.OK
    finally:
        for stream in streams:
            await stream.close()


def _audit_lines(stack: SecureStack, process: str) -> list[dict[str, object]]:
    lines = []
    for line in stack.processes[process].log_path.read_text().splitlines():
        if line.startswith("{") and '"dispatchd.audit"' in line:
            lines.append(json.loads(line))
    return lines


async def test_audit_log_lines(secure_stack: SecureStack, creds: Credentials) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    metadata = [("authorization", f"Bearer {creds.token('auditor', 'operator')}"), ("x-request-id", request_id)]
    stub = secure_stack.jobs()
    reply, call = stub.SubmitJob.with_call(
        job_service_pb2.SubmitJobRequest(job_type="sec.audit"), metadata=metadata, timeout=5
    )
    job = reply.job
    assert ("x-request-id", request_id) in tuple(call.trailing_metadata() or ())
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(job_service_pb2.GetJobRequest(job_id="not-a-uuid"), metadata=metadata, timeout=5)
    assert ("x-request-id", request_id) in tuple(err.value.trailing_metadata() or ())  # type: ignore[attr-defined]
    stream, code, _ = await _register(
        secure_stack, creds.worker("worker-b", creds.token("worker-b", "worker")), "worker-b"
    )
    assert code is grpc.StatusCode.OK
    await stream.close()

    def calls_audited() -> list[dict[str, object]]:
        return [line for line in _audit_lines(secure_stack, "control-plane") if line["request_id"] == request_id]

    async def both_written() -> bool:
        return len(calls_audited()) >= 2

    # Written by the service's log thread, a moment after the answer.
    await eventually(both_written, what="both calls audited")
    calls = calls_audited()
    assert [(c["method"], c["code"]) for c in calls] == [
        ("/dispatchd.v1.JobService/SubmitJob", "OK"),
        ("/dispatchd.v1.JobService/GetJob", "INVALID_ARGUMENT"),
    ]
    submit = calls[0]
    assert submit["event"] == "call"
    assert submit["subject"] == "auditor"
    assert submit["roles"] == ["operator"]
    assert submit["job_ids"] == [job.job_id]
    assert submit["client_cert"] == "spiffe://dispatchd.dev/client/admin-cli"
    assert str(submit["peer"]).startswith("ipv4:127.0.0.1:")
    assert isinstance(submit["latency_ms"], float)
    assert "job_id must be a UUID" in str(calls[1]["detail"])

    async def stream_events() -> list[str]:
        return [
            str(line["event"])
            for line in _audit_lines(secure_stack, "worker-gateway")
            if line.get("worker_id") == "worker-b" and line["method"] == "/dispatchd.v1.WorkerService/Connect"
        ]

    for _ in range(50):
        if "stream.close" in await stream_events():
            break
        await asyncio.sleep(0.1)
    events = await stream_events()
    assert "stream.close" in events
    closes = [
        line for line in _audit_lines(secure_stack, "worker-gateway")
        if line.get("worker_id") == "worker-b" and line["event"] == "stream.close"
    ]
    assert closes[-1]["subject"] == "worker-b"
    assert closes[-1]["client_cert"] == "spiffe://dispatchd.dev/worker/worker-b"
    opens = [line for line in _audit_lines(secure_stack, "worker-gateway") if line["event"] == "stream.open"]
    assert opens and all(line["method"] == "/dispatchd.v1.WorkerService/Connect" for line in opens)
    # Health checks (probes) are not audited.
    assert not any("Health" in str(line["method"]) for line in _audit_lines(secure_stack, "control-plane"))


async def test_odd_registrations_are_invalid_argument(secure_stack: SecureStack, creds: Credentials) -> None:
    # Under the service role any worker id reaches the gateway's own validation.
    security = creds.client("admin-cli", creds.token("pool-odd", "service"))
    odd = [
        wpb.WorkerRegistration(worker_id="nul\x00id", capabilities=["sec.odd"]),
        wpb.WorkerRegistration(worker_id="x" * 129, capabilities=["sec.odd"]),
        wpb.WorkerRegistration(worker_id="w", capabilities=["sec.odd"], labels={"k": "v\x00"}),
        wpb.WorkerRegistration(worker_id="w", capabilities=[f"t{i}" for i in range(257)]),
        wpb.WorkerRegistration(worker_id="w", capabilities=["Not A Type"]),
        wpb.WorkerRegistration(worker_id="w", capabilities=["sec.odd"], max_concurrency=-1),
        wpb.WorkerRegistration(worker_id="", capabilities=["sec.odd"]),
    ]
    for registration in odd:
        stream = WorkerStream(secure_stack.gateway, security)
        try:
            await stream.send(registration=registration)
            assert await stream.reply() is None
            assert await stream.ended() is grpc.StatusCode.INVALID_ARGUMENT, registration
            assert "registration" in await stream.details()
        finally:
            await stream.close()
