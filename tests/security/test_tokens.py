"""Bad tokens are refused with UNAUTHENTICATED by the running services; good ones of each kind pass."""

from __future__ import annotations

import time

import grpc
import pytest

from dispatchd.v1 import job_service_pb2
from tests.support.polling import wait_until
from tests.support.scrape import Scrape
from tests.support.security import Credentials, SecureStack, add_jwks_key, bad_tokens
from tests.support.streams import WorkerStream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _list(stack: SecureStack, authorization: str | None) -> tuple[grpc.StatusCode, str]:
    metadata = [("authorization", authorization)] if authorization is not None else []
    try:
        stack.jobs().ListJobs(job_service_pb2.ListJobsRequest(page_size=1), metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_every_bad_token_is_unauthenticated(secure_stack: SecureStack, creds: Credentials) -> None:
    refused = {}
    for name, token in bad_tokens(creds).items():
        code, details = _list(secure_stack, f"Bearer {token}")
        assert code is grpc.StatusCode.UNAUTHENTICATED, (name, code, details)
        refused[name] = details
    # The caller is told why (without anything secret).
    assert "expired" in refused["expired"]
    assert "not valid yet" in refused["not yet valid"]
    assert "issuer" in refused["wrong issuer"]
    assert "audience" in refused["wrong audience"]
    assert "'none' is not allowed" in refused["alg none"]
    assert "'HS256' is not allowed" in refused["HS256 with the RSA public key"]
    assert "'sub'" in refused["missing sub"]
    assert "signature" in refused["tampered payload"]
    assert "exp claim must be a number" in refused["exp as a numeric string"]


def test_a_doubly_prefixed_scope_grants_nothing(secure_stack: SecureStack, creds: Credentials) -> None:
    token = creds.token("mallory", extra={"scope": "dispatchd:dispatchd.admin"})
    code, details = _list(secure_stack, f"Bearer {token}")
    assert code is grpc.StatusCode.PERMISSION_DENIED, details
    assert "dispatchd.admin" in details


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer-token-without-scheme", "Token abc"]
)
def test_malformed_authorization_headers(secure_stack: SecureStack, authorization: str) -> None:
    code, _ = _list(secure_stack, authorization or None)
    assert code is grpc.StatusCode.UNAUTHENTICATED


def test_good_tokens_of_each_kind(secure_stack: SecureStack, creds: Credentials) -> None:
    variants = {
        "ES256 from the JWKS file": creds.token("v", "viewer"),
        "RS256 from a PEM file (kid = file name)": creds.token("v", "viewer", key="rs-1"),
        "RS256 without a kid": creds.token("v", "viewer", key="rs-1", kid=None),
        "roles as a string": creds.token("v", extra={"roles": "viewer"}),
        "role from the scope claim": creds.token("v", extra={"scope": "openid dispatchd:viewer"}),
        "expired within the leeway": creds.token("v", "viewer", ttl_seconds=-2),
        "audience list containing ours": creds.token("v", "viewer", extra={"aud": ["other", "dispatchd-test"]}),
    }
    for name, token in variants.items():
        code, details = _list(secure_stack, f"Bearer {token}")
        assert code is grpc.StatusCode.OK, (name, code, details)


def test_a_key_added_to_the_jwks_file_is_trusted_without_a_restart(
    secure_stack: SecureStack, creds: Credentials
) -> None:
    kid = f"es-rotated-{int(time.time() * 1000)}"
    before = creds.token("v", "viewer", key="rogue", kid=kid)
    assert _list(secure_stack, f"Bearer {before}")[0] is grpc.StatusCode.UNAUTHENTICATED
    add_jwks_key(creds, kid)
    token = creds.token("v", "viewer", key=kid)
    wait_until(lambda: _list(secure_stack, f"Bearer {token}")[0] is grpc.StatusCode.OK, 10, "new key accepted", 0.2)
    # The old key still works: rotation without downtime.
    assert _list(secure_stack, f"Bearer {creds.token('v', 'viewer')}")[0] is grpc.StatusCode.OK


async def test_a_worker_with_a_bad_token_cannot_connect(secure_stack: SecureStack, creds: Credentials) -> None:
    for name, token in list(bad_tokens(creds).items())[:6]:
        stream = WorkerStream(secure_stack.gateway, creds.worker("worker-a", token))
        try:
            await stream.offer("worker-a", ["sec.test"])
            assert await stream.reply() is None, name
            assert await stream.ended() is grpc.StatusCode.UNAUTHENTICATED, name
        finally:
            await stream.close()


def test_refused_calls_are_counted_with_the_code_the_caller_got(secure_stack: SecureStack) -> None:
    # The metrics interceptor sits outside the security interceptor: refusals are requests too.
    url = secure_stack.processes["control-plane"].metrics_url
    labels = {"method": "JobService/ListJobs", "code": "UNAUTHENTICATED"}
    before = Scrape.of({"cp": url}).total("dispatchd_grpc_server_requests_total", **labels)
    assert _list(secure_stack, None)[0] is grpc.StatusCode.UNAUTHENTICATED
    after = Scrape.of({"cp": url}).total("dispatchd_grpc_server_requests_total", **labels)
    assert after == before + 1
