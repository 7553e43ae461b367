"""Malformed input never gets INTERNAL or UNKNOWN, nor a traceback in any service's log.

The walk sends every method in the method table (`dispatchd.platform.methods`) to every port of
the secured stack, each service's TLS port and its plaintext health port: bytes that do not
decode, and each field of the request set alone to an extreme value (empty, NUL, oversized,
not a UUID, integer bounds, unknown enum numbers, NaN, forged page tokens), nested messages
included. Streams get the same as their first message. A method a port does not serve must
answer UNIMPLEMENTED, which the walk checks is not every answer a port gives.

Before it, one test per way INTERNAL/UNKNOWN used to be reachable by a low-privilege caller.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from dispatchd.devtools.stack import CONTROL_PLANE, GATEWAY, kind_of
from dispatchd.platform import methods, paging
from dispatchd.v1 import job_service_pb2
from tests.support.polling import settled_text
from tests.support.security import CORRUPT, Credentials, SecureStack
from tests.support.streams import first_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


OLD_STYLE_OVERFLOW = _b64(b"e1:2147483648")  # the former unsigned format: attempt 2**31
FORGED_TOKENS = [OLD_STYLE_OVERFLOW, "Wzld.AAAA", "a.b.c", "!!!", "x" * 2000]
INT_BOUNDS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


Answer = tuple[grpc.StatusCode, str]


def _answer(call: Any) -> Answer:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def call(channel: grpc.Channel, path: str, payload: bytes, metadata: list[tuple[str, str]]) -> Answer:
    """One call of `path` with `payload` as the request (or the only stream message), raw bytes."""
    method = descriptor_pool.Default().FindMethodByName(path.lstrip("/").replace("/", "."))
    options = {"metadata": metadata, "timeout": 10}
    if method.client_streaming:
        responses = channel.stream_stream(path)(iter([payload]), **options)
        return _answer(lambda: list(responses))
    if method.server_streaming:
        return _answer(lambda: first_of(channel.unary_stream(path)(payload, **options)))
    return _answer(lambda: channel.unary_unary(path)(payload, **options))


def _bad_scalars(field: FieldDescriptor) -> list[Any]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING and field.type == FieldDescriptor.TYPE_BYTES:
        return [b"\x00" * 70_000]
    if kind == FieldDescriptor.CPPTYPE_STRING:
        tokens = FORGED_TOKENS if field.name == "page_token" else []
        return ["\x00", "x" * 100_000, "not-a-uuid", f"{uuid.uuid4()}\x00", "\n", *tokens]
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return [True]
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        return [-1, 99]
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return [math.nan, math.inf, -math.inf]
    low, high = INT_BOUNDS[kind]
    return sorted({low, high, -1 if low < 0 else high - 1})


def variants(descriptor: Descriptor, depth: int = 0) -> Iterator[Message]:
    """The message with one field (or one field of one nested message) set to one extreme value."""
    cls = message_factory.GetMessageClass(descriptor)
    for field in descriptor.fields:
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            for value in _bad_scalars(sub.fields_by_name["value"]):
                message = cls()
                getattr(message, field.name)["k"] = value
                yield message
            continue
        if sub is not None:
            if depth >= 2:
                continue
            for inner in variants(sub, depth + 1):
                message = cls()
                target = getattr(message, field.name)
                (target.add() if field.is_repeated else target).CopyFrom(inner)
                yield message
            continue
        for value in _bad_scalars(field):
            message = cls()
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
            yield message


# --------------------------------------------------------------------------- one test per finding


def _own_job(secure_stack: SecureStack, creds: Credentials, subject: str) -> tuple[str, list[tuple[str, str]]]:
    metadata = _bearer(creds.token(subject, "submitter"))
    stub = secure_stack.jobs(creds.client("alice"))
    reply = stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="probe.paging"), metadata=metadata, timeout=5)
    return reply.job.job_id, metadata


def _refused(stub_call: Any, request: Message, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        stub_call(request, metadata=metadata, timeout=5)
    return raised.value


def test_a_page_token_past_int4_is_invalid_argument(secure_stack: SecureStack, creds: Credentials) -> None:
    job_id, metadata = _own_job(secure_stack, creds, "alice")
    stub = secure_stack.jobs(creds.client("alice"))
    key = paging.read_key(secure_stack.env["DISPATCHD_PAGE_TOKEN_SECRET_FILE"])
    # Even signed with the deployment's own key (a leaked key), the position is range-checked.
    signed = paging.PageTokens(key).issue_attempt(paging.Listing("executions", (job_id,)), 2**31)
    for token in (OLD_STYLE_OVERFLOW, signed):
        request = job_service_pb2.ListExecutionsRequest(job_id=job_id, page_token=token)
        error = _refused(stub.ListExecutions, request, metadata)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (token, error)
        assert "page_token" in (error.details() or "")


def test_forged_and_replayed_page_tokens_are_invalid_argument(secure_stack: SecureStack, creds: Credentials) -> None:
    metadata = _bearer(creds.token("paging-admin", "admin"))
    stub = secure_stack.jobs()
    for _ in range(3):
        stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type="probe.pages"), metadata=metadata, timeout=5)
    first = stub.ListJobs(job_service_pb2.ListJobsRequest(job_type="probe.pages", page_size=1), metadata=metadata)
    token = first.next_page_token
    assert token
    following = job_service_pb2.ListJobsRequest(job_type="probe.pages", page_size=1, page_token=token)
    assert stub.ListJobs(following, metadata=metadata, timeout=5).jobs  # the issued token pages
    payload, _, mac = token.partition(".")
    forged = {
        "tampered mac": f"{payload}.{mac[::-1]}",
        "position of our choosing": f"{_b64(json.dumps([0, str(uuid.uuid4())]).encode())}.{mac}",
        "unsigned": payload,
    }
    replayed = {
        "another job type": job_service_pb2.ListJobsRequest(job_type="probe.other", page_token=token),
        "another status": job_service_pb2.ListJobsRequest(job_type="probe.pages", status=1, page_token=token),
        "another listing": job_service_pb2.ListDeadLettersRequest(page_token=token),
    }
    requests = {n: job_service_pb2.ListJobsRequest(job_type="probe.pages", page_token=t) for n, t in forged.items()}
    for name, request in {**requests, **replayed}.items():
        method = stub.ListDeadLetters if isinstance(request, job_service_pb2.ListDeadLettersRequest) else stub.ListJobs
        error = _refused(method, request, metadata)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (name, error)


def test_health_list_on_the_tls_port_lists_the_statuses(secure_stack: SecureStack, creds: Credentials) -> None:
    channel = secure_stack.channel(creds.client("bob"))
    answer = channel.unary_unary(
        "/grpc.health.v1.Health/List", response_deserializer=health_pb2.HealthListResponse.FromString
    )(health_pb2.HealthListRequest().SerializeToString(), timeout=5)
    assert answer.statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    assert answer.statuses[methods.JOB_SERVICE].status == health_pb2.HealthCheckResponse.SERVING


def test_garbage_to_the_health_port_is_invalid_argument(secure_stack: SecureStack) -> None:
    for name, target in secure_stack.health.items():
        channel = grpc.insecure_channel(target)
        try:
            with pytest.raises(grpc.RpcError) as check:
                channel.unary_unary("/grpc.health.v1.Health/Check")(b"\x12", timeout=5)
            with pytest.raises(grpc.RpcError) as watch:
                list(channel.unary_stream("/grpc.health.v1.Health/Watch")(b"\x12", timeout=5))
            for error in (check.value, watch.value):
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (name, error)
                assert "DecodeError" not in (error.details() or ""), "no exception class in the message"
        finally:
            channel.close()


# --------------------------------------------------------------------------- the walk


def _ports(secure_stack: SecureStack, creds: Credentials) -> dict[str, tuple[grpc.Channel, str]]:
    """Each port by name: a channel to it and the kind of service behind it."""
    ports: dict[str, tuple[grpc.Channel, str]] = {}
    for name, process in secure_stack.processes.items():
        kind = kind_of(name)
        security = creds.worker("worker-a") if kind == GATEWAY else creds.client("admin-cli")
        ports[f"{name} (TLS)"] = (secure_stack.channel(security, process.address), kind)
        if process.health is not None and process.health != process.address:
            ports[f"{name} (health)"] = (grpc.insecure_channel(process.health), "health")
    return ports


def _expected(kind: str) -> set[str]:
    """What a port must serve: its service (if any), health, and reflection on the TLS ports."""
    services = {CONTROL_PLANE: {methods.JOB_SERVICE}, GATEWAY: {methods.WORKER_SERVICE}}.get(kind, set())
    services |= {methods.HEALTH_SERVICE} | ({methods.REFLECTION_SERVICE} if kind != "health" else set())
    return {m.path for m in methods.METHODS if m.service in services}


def test_every_method_on_every_port_survives_malformed_input(secure_stack: SecureStack, creds: Credentials) -> None:
    admin = _bearer(creds.token("walker", "admin"))
    service = _bearer(creds.token("pool", "service"))
    bad: list[tuple[str, str, Answer]] = []
    calls = 0
    for port, (channel, kind) in _ports(secure_stack, creds).items():
        served = set()
        for method in methods.METHODS:
            metadata = service if method.service == methods.WORKER_SERVICE else admin
            pool = descriptor_pool.Default()
            descriptor = pool.FindMethodByName(f"{method.service}.{method.name}").input_type
            answers = [call(channel, method.path, payload, metadata) for payload in CORRUPT]
            if any(code is not grpc.StatusCode.UNIMPLEMENTED for code, _ in answers):
                served.add(method.path)
                answers += [call(channel, method.path, v.SerializeToString(), metadata) for v in variants(descriptor)]
            calls += len(answers)
            bad += [(port, method.path, answer) for answer in answers if answer[0] in NEVER]
        assert served == _expected(kind), port
    assert not bad, bad[:20]
    assert calls > 500, calls  # about 700: a walk that silently shrank would prove little
    for name, process in secure_stack.processes.items():
        log = settled_text(process.log_path)
        assert "Traceback" not in log, (name, process.log_tail())
