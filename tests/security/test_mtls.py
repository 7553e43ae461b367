"""mTLS: who may connect at all, TLS 1.3, and certificate files rotated on disk without a restart."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools import certs
from dispatchd.devtools.stack import free_listen
from dispatchd.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.polling import wait_until
from tests.support.processes import Spawner
from tests.support.security import Credentials, SecureStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _list(channel: grpc.Channel, token: str) -> grpc.StatusCode:
    try:
        job_service_pb2_grpc.JobServiceStub(channel).ListJobs(
            job_service_pb2.ListJobsRequest(page_size=1), metadata=[("authorization", f"Bearer {token}")], timeout=5
        )
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_who_may_connect(secure_stack: SecureStack, creds: Credentials) -> None:
    token = creds.token("root", "admin")
    ca = creds.pki.ca
    cert, key = creds.pki.client("admin-cli")
    cases = {
        "our CA, client certificate": (creds.client("admin-cli"), grpc.StatusCode.OK),
        "a worker certificate works for any role's calls": (creds.worker("worker-a"), grpc.StatusCode.OK),
        "no client certificate": (ClientSecurity(ca=ca), grpc.StatusCode.UNAVAILABLE),
        "client certificate from another CA": (creds.client("admin-cli", other_ca=True), grpc.StatusCode.UNAVAILABLE),
        "plaintext": (ClientSecurity(), grpc.StatusCode.UNAVAILABLE),
        "server certificate from a CA we do not trust": (
            ClientSecurity(ca=creds.other_pki.ca, cert=cert, key=key),
            grpc.StatusCode.UNAVAILABLE,
        ),
    }
    for name, (security, expected) in cases.items():
        for target in (secure_stack.control_plane, secure_stack.gateway):
            channel = secure_stack.channel(security, target)
            if target == secure_stack.control_plane:
                assert _list(channel, token) is expected, name
            else:
                code = _gateway_probe(channel)
                assert (code is grpc.StatusCode.UNAVAILABLE) == (expected is grpc.StatusCode.UNAVAILABLE), (name, code)


def _gateway_probe(channel: grpc.Channel) -> grpc.StatusCode:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def _handshake(target: str, creds: Credentials, client: str = "admin-cli", other_ca: bool = False,
               tls12: bool = False) -> tuple[str, int]:
    """A bare TLS handshake: (negotiated version, serial of the server certificate)."""
    pki = creds.other_pki if other_ca else creds.pki
    context = ssl.create_default_context(cafile=str(creds.pki.ca))
    cert, key = pki.client(client)
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock, context.wrap_socket(
        sock, server_hostname="localhost"
    ) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        # With TLS 1.3 a refused client certificate surfaces on the first read, not in the handshake.
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        if not tls.recv(1):
            raise ConnectionError("the server closed the connection")
        return str(tls.version()), x509.load_der_x509_certificate(der).serial_number


def test_the_server_negotiates_tls13(secure_stack: SecureStack, creds: Credentials) -> None:
    version, _ = _handshake(secure_stack.control_plane, creds)
    assert version == "TLSv1.3"


def test_a_tls12_connection_is_refused_per_call(secure_stack: SecureStack, creds: Credentials) -> None:
    # grpcio cannot refuse the TLS 1.2 handshake itself; every call on such a connection is
    # refused (unit-tested in tests/unit/test_security_interceptor.py). Here: the handshake
    # shows the server would otherwise accept 1.2, which is why the per-call check exists.
    version, _ = _handshake(secure_stack.control_plane, creds, tls12=True)
    assert version == "TLSv1.2"


@pytest.fixture
def rotating_control_plane(
    tmp_path: Path, creds: Credentials, database_url: str, redis_url: str, spawn_service: Spawner
) -> tuple[str, Path]:
    tls = tmp_path / "tls"
    tls.mkdir()
    server_cert, server_key = creds.pki.server
    shutil.copy(server_cert, tls / "server.pem")
    shutil.copy(server_key, tls / "server.key")
    shutil.copy(creds.pki.ca, tls / "clients-ca.pem")
    env = {
        **creds.server_env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_TLS_CERT_FILE": str(tls / "server.pem"),
        "DISPATCHD_TLS_KEY_FILE": str(tls / "server.key"),
        "DISPATCHD_TLS_CLIENT_CA_FILE": str(tls / "clients-ca.pem"),
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "1",
    }
    process = spawn_service.service("control-plane", env, health=free_listen())
    return process.address, tls


def _accepted(target: str, creds: Credentials, other_ca: bool) -> bool:
    try:
        _handshake(target, creds, other_ca=other_ca)
    except (ssl.SSLError, OSError):
        return False
    return True


def test_certificate_files_are_reloaded_without_a_restart(
    rotating_control_plane: tuple[str, Path], creds: Credentials
) -> None:
    target, tls = rotating_control_plane
    _, first_serial = _handshake(target, creds)

    # cert-manager renews the server certificate: the next connection gets the new one.
    ca = certs.load(creds.pki.ca, creds.pki.ca_key)
    renewed = certs.server_cert(ca)
    renewed.write(tls / "server.pem", tls / "server.key")
    serial = renewed.cert.serial_number
    wait_until(lambda: _handshake(target, creds)[1] == serial, 10, "renewed certificate served", 0.1)
    assert renewed.cert.serial_number != first_serial
    with creds.client("admin-cli").sync_channel(target) as channel:
        assert _list(channel, creds.token("root", "admin")) is grpc.StatusCode.OK

    # The client CA rotates to a bundle holding a new CA as well: its clients get in.
    assert not _accepted(target, creds, other_ca=True)
    bundle = creds.pki.ca.read_bytes() + creds.other_pki.ca.read_bytes()
    partial = tls / ".bundle"
    partial.write_bytes(bundle)
    partial.replace(tls / "clients-ca.pem")
    wait_until(lambda: _accepted(target, creds, other_ca=True), 10, "new client CA trusted", 0.1)

    # A half-written (unusable) file is ignored: the previous certificate keeps serving.
    (tls / "server.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage")
    assert _handshake(target, creds)[1] == renewed.cert.serial_number
