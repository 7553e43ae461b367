"""Property: random and malformed requests and stream messages never get INTERNAL or UNKNOWN.

Hypothesis builds requests for every RPC from its protobuf descriptor (so RPCs added later
are covered without touching this file): strings that are empty, huge, full of NULs or
almost-valid ids, extreme integers, unknown enum values, random bytes; plus raw byte strings
that are not valid protobuf at all. Calls carry a random (mostly valid) token. Every answer
must be a documented status, and afterwards every service still serves.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchd.v1 import common_pb2, job_service_pb2, worker_service_pb2
from tests.support.polling import settled_text
from tests.support.security import CORRUPT, Credentials, SecureStack
from tests.support.streams import first_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"]
# What the README documents a JobService call can answer; anything else fails the property.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
# A worker stream can also be superseded (ABORTED) by a newer registration of its worker id.
DOCUMENTED_STREAM = DOCUMENTED | {grpc.StatusCode.ABORTED}
EXAMPLES = 150

INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def strings(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(["", "\x00", "a" * 5000, "email.send", "builtin.echo", "ünïcode.typ", "../..", "%s%n"]),
        st.uuids().map(str),
        st.sampled_from(known or [str(uuid.uuid4())]),
        st.sampled_from(known or [str(uuid.uuid4())]),
        st.builds(lambda u, s: str(u) + s, st.uuids(), st.sampled_from(["\x00", " ", "x"])),
    )


def scalar(field: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"\x00" * 70_000))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 100))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = INT_BOUNDS[kind]
    return st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1, 1000, 1001, low, high]))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, known: list[str], depth: int = 0) -> dict[str, Any]:
    """Keyword arguments for `descriptor`'s message class (each field set or not)."""
    values: dict[str, Any] = {}
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            values[field.name] = draw(
                st.dictionaries(scalar(key_field, known), scalar(value_field, known), max_size=4)
            )
        elif field.message_type is not None:
            if depth >= 2:
                continue
            sub = messages(field.message_type, known, depth + 1)
            if field.is_repeated:
                values[field.name] = draw(st.lists(sub, max_size=3))
            else:
                values[field.name] = draw(sub)
        elif field.is_repeated:
            values[field.name] = draw(st.lists(scalar(field, known), max_size=5))
        else:
            values[field.name] = draw(scalar(field, known))
    return values


def build(cls: Any, values: dict[str, Any]) -> Message | None:
    """The message, or None when protobuf itself refuses the values (then nothing is sent)."""
    try:
        message: Message = cls(**_nested(cls.DESCRIPTOR, values))
        message.SerializeToString()
    except (ValueError, TypeError, OverflowError):
        return None
    return message


def _nested(descriptor: Descriptor, values: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        sub = field.message_type
        if sub is not None and not sub.GetOptions().map_entry:
            cls = _class_of(sub)
            if isinstance(value, list):
                result[name] = [cls(**_nested(sub, v)) for v in value]
            else:
                result[name] = cls(**_nested(sub, value))
        else:
            result[name] = value
    return result


def _class_of(descriptor: Descriptor) -> Any:
    for module in (job_service_pb2, common_pb2, worker_service_pb2):
        if descriptor.file.name == module.DESCRIPTOR.name:
            return getattr(module, descriptor.name)
    from google.protobuf import duration_pb2, timestamp_pb2

    return {"Duration": duration_pb2.Duration, "Timestamp": timestamp_pb2.Timestamp}[descriptor.name]


def tokens(creds: Credentials) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Mostly valid tokens of several roles (so requests reach the handlers), some missing or garbage."""
    valid = [creds.token("fuzz", "admin"), creds.token("fuzz", "operator"), creds.token("fuzz", "submitter")]
    authorized = st.sampled_from(valid).map(lambda t: [("authorization", f"Bearer {t}"), ("x-request-id", "fz")])
    # Header-safe text only: gRPC clients refuse to send anything else (a client-side error).
    garbage = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
        lambda t: [("authorization", f"Bearer {t}")]
    )
    kinds = ["valid"] * 8 + ["garbage", "none"]
    return st.sampled_from(kinds).flatmap(
        lambda kind: authorized if kind == "valid" else garbage if kind == "garbage" else st.just([])
    )


@pytest.fixture(scope="module")
def known_job_ids(secure_stack: SecureStack, creds: Credentials) -> list[str]:
    """Existing, terminal jobs: requests naming them reach deeper code without ever blocking."""
    stub = secure_stack.jobs()
    metadata = [("authorization", f"Bearer {creds.token('fuzz', 'admin')}")]
    ids = []
    for i in range(3):
        job = stub.SubmitJob(job_service_pb2.SubmitJobRequest(job_type=f"fuzz.kind{i}"), metadata=metadata, timeout=5)
        stub.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job.job_id), metadata=metadata, timeout=5)
        ids.append(job.job.job_id)
    return ids


def _answer(channel: grpc.Channel, method: str, payload: bytes, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    path = f"/{JOB_SERVICE.full_name}/{method}"
    try:
        if JOB_SERVICE.methods_by_name[method].server_streaming:
            # A stream answers (or fails) with its first message: WatchJobs's comes at once.
            first_of(channel.unary_stream(path)(payload, metadata=metadata, timeout=30))
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(secure_stack: SecureStack, creds: Credentials) -> grpc.Channel:
    return secure_stack.channel(creds.client("admin-cli"))


@pytest.mark.parametrize("method", sorted(JOB_SERVICE.methods_by_name))
def test_random_requests_get_documented_statuses(
    channel: grpc.Channel, creds: Credentials, known_job_ids: list[str], method: str
) -> None:
    descriptor = JOB_SERVICE.methods_by_name[method].input_type
    cls = message_factory.GetMessageClass(descriptor)
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(values=messages(descriptor, known_job_ids), metadata=tokens(creds))
    def property_holds(values: dict[str, Any], metadata: list[tuple[str, str]]) -> None:
        request = build(cls, values)
        if request is None:
            return
        code = _answer(channel, method, request.SerializeToString(), metadata)
        seen[code.name] = seen.get(code.name, 0) + 1
        assert code in DOCUMENTED, (method, code, request)

    property_holds()
    assert sum(seen.values()) >= EXAMPLES // 2, seen


@pytest.mark.parametrize("method", sorted(JOB_SERVICE.methods_by_name))
def test_undecodable_requests_are_invalid_argument(channel: grpc.Channel, creds: Credentials, method: str) -> None:
    metadata = [("authorization", f"Bearer {creds.token('fuzz', 'admin')}")]
    descriptor = JOB_SERVICE.methods_by_name[method].input_type
    cls = message_factory.GetMessageClass(descriptor)

    @settings(max_examples=EXAMPLES // 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(payload=st.one_of(st.binary(max_size=200), st.sampled_from(CORRUPT)))
    def property_holds(payload: bytes) -> None:
        try:
            cls.FromString(payload)
            decodable = True
        except Exception:
            decodable = False
        code = _answer(channel, method, payload, metadata)
        assert code in DOCUMENTED, (method, code, payload)
        if not decodable:
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (method, code, payload)

    property_holds()


def _stream_messages(known: list[str]) -> st.SearchStrategy[list[Any]]:
    request = worker_service_pb2.ConnectRequest.DESCRIPTOR
    structured = messages(request, known).map(lambda v: build(worker_service_pb2.ConnectRequest, v))
    garbage = st.binary(max_size=80)
    kinds = ["structured"] * 5 + ["garbage"]
    item = st.sampled_from(kinds).flatmap(lambda kind: structured if kind == "structured" else garbage)
    return st.lists(item, max_size=6)


def _run_stream(channel: grpc.Channel, token: str, first: Any, rest: list[Any]) -> grpc.StatusCode:
    """Send the messages (then half-close) and read until the gateway ends the stream."""
    items = [i if isinstance(i, bytes) else i.SerializeToString() for i in [first, *rest] if i is not None]
    metadata = [("authorization", f"Bearer {token}")]
    call = channel.stream_stream("/dispatchd.v1.WorkerService/Connect")
    try:
        for _ in call(iter(items), metadata=metadata, timeout=20):
            pass
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_random_worker_streams_get_documented_statuses(
    secure_stack: SecureStack, creds: Credentials, known_job_ids: list[str]
) -> None:
    channel = secure_stack.channel(creds.worker("worker-a"), secure_stack.gateway)
    registration = worker_service_pb2.ConnectRequest(
        registration=worker_service_pb2.WorkerRegistration(
            worker_id="worker-a", capabilities=["fuzz"], max_concurrency=2
        )
    )
    random_first = messages(worker_service_pb2.ConnectRequest.DESCRIPTOR, known_job_ids).map(
        lambda v: build(worker_service_pb2.ConnectRequest, v)
    )
    # Mostly a valid registration, so the random messages after it reach the registered stream.
    first_messages = st.sampled_from(["registration"] * 3 + ["random", "garbage"]).flatmap(
        lambda kind: st.just(registration)
        if kind == "registration"
        else random_first
        if kind == "random"
        else st.binary(max_size=40)
    )
    seen: dict[str, int] = {}

    # A worker token (its registration must name worker-a) or a service token, under which any
    # registration, however odd its worker id, reaches the gateway's own validation.
    stream_tokens = st.sampled_from([creds.token("worker-a", "worker"), creds.token("pool", "service")])

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(first=first_messages, rest=_stream_messages(known_job_ids), token=stream_tokens)
    def property_holds(first: Any, rest: list[Any], token: str) -> None:
        code = _run_stream(channel, token, first, rest)
        seen[code.name] = seen.get(code.name, 0) + 1
        assert code in DOCUMENTED_STREAM, (code, first, rest)

    property_holds()
    assert seen.get("OK", 0) > 0, seen


def test_the_services_still_serve(secure_stack: SecureStack, creds: Credentials) -> None:
    for target in secure_stack.health.values():
        channel = grpc.insecure_channel(target)
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        finally:
            channel.close()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    for name, process in secure_stack.processes.items():
        assert process.is_running(), name
        assert "Traceback" not in settled_text(process.log_path), name
    metadata = [("authorization", f"Bearer {creds.token('fuzz', 'admin')}")]
    request = job_service_pb2.SubmitJobRequest(job_type="fuzz.after")
    job = secure_stack.jobs().SubmitJob(request, metadata=metadata, timeout=5)
    assert job.job.job_id
