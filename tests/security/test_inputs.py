"""Strict inputs against the secured stack: idempotency keys per submitter, names without control characters.

Issue 10, findings 3 and 5: bob's idempotency key told alice that it existed and which job
it named (and let bob squat keys alice would use); a job type or capability with a newline
was accepted, and such a job stayed PENDING forever.
"""

from __future__ import annotations

import uuid

import grpc
import pytest

from dispatchd.v1 import job_service_pb2
from dispatchd.v1 import worker_service_pb2 as wpb
from tests.support.security import Credentials, SecureStack
from tests.support.streams import WorkerStream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

Metadata = list[tuple[str, str]]


def _as(creds: Credentials, subject: str, role: str = "submitter") -> Metadata:
    return [("authorization", f"Bearer {creds.token(subject, role)}")]


def _refusal(stack: SecureStack, request: job_service_pb2.SubmitJobRequest, metadata: Metadata) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stack.jobs().SubmitJob(request, metadata=metadata, timeout=10)
    return caught.value


def test_an_idempotency_key_belongs_to_its_submitter(secure_stack: SecureStack, creds: Credentials) -> None:
    stub, alice, bob = secure_stack.jobs(), _as(creds, "alice"), _as(creds, "bob")
    key = f"k-{uuid.uuid4().hex}"
    request = job_service_pb2.SubmitJobRequest(job_type="sec.keys", payload=b"bob's", idempotency_key=key)
    bobs = stub.SubmitJob(request, metadata=bob, timeout=10)
    assert not bobs.deduplicated

    # Alice's K is her own: a new job, neither a conflict nor bob's job (the same request too).
    alices = stub.SubmitJob(request, metadata=alice, timeout=10)
    assert not alices.deduplicated and alices.job.job_id != bobs.job.job_id
    other = job_service_pb2.SubmitJobRequest(job_type="sec.keys", payload=b"alice's", idempotency_key=key)
    refused = _refusal(secure_stack, other, alice)
    assert refused.code() is grpc.StatusCode.ALREADY_EXISTS
    assert alices.job.job_id in (refused.details() or "") and bobs.job.job_id not in (refused.details() or "")

    # Bob's key still deduplicates his own submits, and names only his own job.
    again = stub.SubmitJob(request, metadata=bob, timeout=10)
    assert again.deduplicated and again.job.job_id == bobs.job.job_id
    refused = _refusal(secure_stack, other, bob)
    assert refused.code() is grpc.StatusCode.ALREADY_EXISTS
    assert bobs.job.job_id in (refused.details() or "") and alices.job.job_id not in (refused.details() or "")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"job_type": "probe.never\n"}, "job_type 'probe.never\\n' is not a valid job type"),
        ({"job_type": "probe\r\nforged: line"}, "is not a valid job type"),
        ({"job_type": "probe.\x1b[2Jx"}, "is not a valid job type"),
        ({"metadata": {"tenant\n": "a"}}, "metadata key 'tenant\\n' must not contain control characters"),
        ({"idempotency_key": "k\n"}, "idempotency_key 'k\\n' must not contain control characters"),
    ],
)
def test_names_with_control_characters_are_refused(
    secure_stack: SecureStack, creds: Credentials, fields: dict[str, object], words: str
) -> None:
    request = job_service_pb2.SubmitJobRequest(**{"job_type": "sec.names", **fields})  # type: ignore[arg-type]
    refused = _refusal(secure_stack, request, _as(creds, "alice"))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert words in (refused.details() or "")


async def test_a_capability_with_a_newline_is_refused(secure_stack: SecureStack, creds: Credentials) -> None:
    security = creds.worker("worker-a", creds.token("worker-a", "worker"))
    stream = WorkerStream(secure_stack.gateway, security)
    try:
        await stream.offer("worker-a", ["sec.fine", "probe.never\n"])
        reply = await stream.reply()
        assert reply is None or reply.WhichOneof("payload") != "ack" or reply.ack.status != wpb.ACK_STATUS_ACCEPTED
        assert await stream.ended() is grpc.StatusCode.INVALID_ARGUMENT
        assert "registration.capabilities[1] 'probe.never\\n' is not a valid job type" in await stream.details()
    finally:
        await stream.close()
