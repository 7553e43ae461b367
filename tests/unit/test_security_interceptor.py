"""The interceptor's decisions, one at a time, without a server: TLS version, identities, limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from dispatchd.platform.config import Settings
from dispatchd.platform.errors import NotFound
from dispatchd.platform.methods import rule_for
from dispatchd.platform.security import settings as security_settings
from dispatchd.platform.security.access import ANONYMOUS, Access, check_owner, current, owner_filter
from dispatchd.platform.security.interceptor import (
    Call,
    Malformed,
    Refused,
    SecurityInterceptor,
    StreamCounter,
    _tolerant,
)
from dispatchd.platform.security.roles import Scope
from dispatchd.platform.security.tls import PeerCertificate, peer_certificate
from dispatchd.platform.security.tokens import Principal
from dispatchd.v1 import job_service_pb2
from tests.support.security import Credentials, make_credentials


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("interceptor"))


class FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self.auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


def _interceptor(creds: Credentials) -> SecurityInterceptor:
    env = creds.server_env()
    values = {k.removeprefix("DISPATCHD_").lower(): v for k, v in env.items() if k.startswith("DISPATCHD_")}
    config = security_settings.load(Settings(**values))  # type: ignore[arg-type]
    return SecurityInterceptor(config)


def _call(interceptor: SecurityInterceptor, method: str, token: str | None) -> Call:
    metadata = {"authorization": f"Bearer {token}"} if token else {}
    return Call(interceptor, method, rule_for(method), metadata)


TLS13 = {"transport_security_type": [b"ssl"], "ssl_tls_version": [b"TLSv1.3"]}


def test_connections_older_than_tls13_are_refused(creds: Credentials) -> None:
    interceptor = _interceptor(creds)
    token = creds.token("root", "admin")
    call = _call(interceptor, "/dispatchd.v1.JobService/GetJob", token)
    record = call.record(FakeContext({}))  # type: ignore[arg-type]
    access = call.admit(FakeContext(TLS13), record)  # type: ignore[arg-type]
    assert access.principal is not None and access.principal.subject == "root"
    old = {"transport_security_type": [b"ssl"], "ssl_tls_version": [b"TLSv1.2"]}
    with pytest.raises(Refused) as refused:
        call.admit(FakeContext(old), record)  # type: ignore[arg-type]
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert "TLS 1.3 is required" in refused.value.message
    # Even health: the transport rule is for every call.
    health = _call(interceptor, "/grpc.health.v1.Health/Check", None)
    with pytest.raises(Refused):
        health.admit(FakeContext(old), record)  # type: ignore[arg-type]


def test_worker_identity_rules(creds: Credentials) -> None:
    call = _call(_interceptor(creds), "/dispatchd.v1.WorkerService/Connect", None)
    cert = PeerCertificate("w-1", ("spiffe://example.org/ns/jobs/worker/w-1", "w-1.jobs.svc"))
    worker = Access(Principal("w-1", frozenset({"worker"})), Scope.ALL)
    service = Access(Principal("pool", frozenset({"service"})), Scope.ALL)
    assert call.worker_problem(worker, cert, "w-1") is None
    assert call.worker_problem(worker, None, "w-1") is None
    assert "token subject" in (call.worker_problem(worker, cert, "w-2") or "")
    other_cert = PeerCertificate("w-2", ())
    assert "certificate does not name" in (call.worker_problem(worker, other_cert, "w-1") or "")
    assert call.worker_problem(service, other_cert, "anything") is None
    # Without authentication the certificate alone decides.
    assert call.worker_problem(ANONYMOUS, cert, "w-1.jobs.svc") is None
    assert call.worker_problem(ANONYMOUS, cert, "w-9") is not None


def test_certificate_identities() -> None:
    cert = peer_certificate(
        {
            "transport_security_type": [b"ssl"],
            "x509_common_name": [b"node-7"],
            "x509_subject_alternative_name": [b"spiffe://td/ns/a/sa/w-3", b"w3.example"],
        }
    )
    assert cert is not None
    assert cert.identities == {"node-7", "spiffe://td/ns/a/sa/w-3", "w-3", "w3.example"}
    assert cert.label == "spiffe://td/ns/a/sa/w-3"
    assert peer_certificate({"transport_security_type": [b"ssl"]}) is None
    assert peer_certificate({}) is None


def test_stream_counter() -> None:
    counter = StreamCounter(2)
    assert counter.acquire("a") and counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    counter.release("a")
    assert counter.acquire("a")
    counter.release("a")
    counter.release("a")
    counter.release("b")
    assert not counter.open


def test_undecodable_bytes_become_a_marker() -> None:
    deserialize = _tolerant(job_service_pb2.GetJobRequest.FromString)
    assert deserialize is not None
    assert deserialize(job_service_pb2.GetJobRequest(job_id="x").SerializeToString()).job_id == "x"
    bad = deserialize(b"\x0a\x02\xff\xfe")
    assert isinstance(bad, Malformed) and "UTF-8" in bad.problem
    assert _tolerant(None) is None


def test_owner_scope() -> None:
    assert owner_filter() is None
    token = current.set(Access(Principal("alice", frozenset({"submitter"})), Scope.OWN))
    try:
        assert owner_filter() == "alice"
        check_owner("j", "alice")
        with pytest.raises(NotFound):
            check_owner("j", "bob")
        with pytest.raises(NotFound):
            check_owner("j", None)
    finally:
        current.reset(token)


def test_security_settings(creds: Credentials, tmp_path: Path) -> None:
    assert security_settings.guardrail(Settings(app_env="production")) == [
        "authentication is off (set DISPATCHD_AUTH_ENABLED=true)",
        "TLS is off (set DISPATCHD_TLS_CERT_FILE and DISPATCHD_TLS_KEY_FILE)",
        "client certificates are not required (set DISPATCHD_TLS_REQUIRE_CLIENT_CERT=true and "
        "DISPATCHD_TLS_CLIENT_CA_FILE)",
        "page tokens would be signed with a key of each process, which other replicas refuse "
        "(set DISPATCHD_PAGE_TOKEN_SECRET_FILE to a key shared by every control plane)",
    ]
    with pytest.raises(security_settings.SecurityConfigError, match="refusing to start"):
        security_settings.load(Settings(app_env="PRODUCTION"))
    config = security_settings.load(Settings())
    assert not config.auth_enabled and not config.tls_enabled and not config.production
    with pytest.raises(security_settings.SecurityConfigError, match="is not a readable file"):
        security_settings.load(Settings(tls_cert_file=str(tmp_path / "missing.pem"), tls_key_file=str(tmp_path / "k")))


def test_client_security_options(tmp_path: Path) -> None:
    from dispatchd.common.security import ClientSecurity, CredentialsError

    token_file = tmp_path / "t.jwt"
    token_file.write_text("abc.def.ghi\n")
    env = {
        "DISPATCHD_TOKEN_FILE": str(token_file),
        "DISPATCHD_CA": "/ca.pem",
        "DISPATCHD_CERT": "/c.pem",
        "DISPATCHD_KEY": "/c.key",
        "DISPATCHD_SERVER_NAME": "cp.internal",
    }
    security = ClientSecurity.from_env(env)
    assert security.tls
    assert security.metadata() == (("authorization", "Bearer abc.def.ghi"),)
    assert dict(security.channel_options("cp:50051"))["grpc.ssl_target_name_override"] == "cp.internal"
    # The token file is read for every call: a rotated token is picked up.
    token_file.write_text("new.token.here")
    assert security.metadata() == (("authorization", "Bearer new.token.here"),)
    assert ClientSecurity().metadata() == ()
    with pytest.raises(CredentialsError, match="needs its key"):
        ClientSecurity(ca=Path("/ca"), cert=Path("/c"))
    with pytest.raises(CredentialsError, match="not both"):
        ClientSecurity(token="a", token_file=token_file)
    with pytest.raises(CredentialsError, match="needs TLS"):
        ClientSecurity(cert=Path("/c"), key=Path("/k"))
    with pytest.raises(CredentialsError, match="cannot read"):
        ClientSecurity(token_file=tmp_path / "missing").metadata()
    with pytest.raises(CredentialsError, match="cannot read"):
        ClientSecurity(ca=tmp_path / "missing.pem").channel_credentials()
