"""Claims of a correctly signed token must have their RFC 7519 JSON types, and a role is parsed once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dispatchd.platform.security.tokens import TokenError
from tests.support.security import Credentials, verifier

# Far in the future, not "now + a while": parameters are built when the module is collected,
# and a long suite reaches this test many minutes later (an "in ten minutes" expiry had passed).
_LATER = 4_102_444_800  # 2100-01-01


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"exp": str(_LATER)}, "exp claim must be a number"),
        ({"nbf": "0"}, "nbf claim must be a number"),
        ({"iat": True}, "iat claim must be a number"),
        ({"roles": {"admin": True}}, "roles claim must be a string or an array of strings"),
        ({"roles": ["viewer", 7]}, "roles claim must be a string or an array of strings"),
        ({"roles": None}, "roles claim must be a string or an array of strings"),
        ({"scope": ["admin"]}, "scope claim must be a string"),
        ({"scp": 1}, "scp claim must be a string or an array of strings"),
    ],
)
def test_a_claim_of_the_wrong_json_type_is_refused(creds: Credentials, extra: dict[str, Any], reason: str) -> None:
    token = creds.token("mallory", "viewer", extra=extra)
    with pytest.raises(TokenError, match=reason):
        verifier(creds).verify(token)


@pytest.mark.parametrize("extra", [{"exp": True}, {"exp": float("inf")}, {"jti": 42}])
def test_claims_pyjwt_already_refuses_stay_refused(creds: Credentials, extra: dict[str, Any]) -> None:
    # pyjwt reads true as 1 (long expired), fails on Infinity and on a numeric jti.
    with pytest.raises(TokenError):
        verifier(creds).verify(creds.token("mallory", "viewer", extra=extra))


@pytest.mark.parametrize(
    ("scope", "roles"),
    [
        ("dispatchd:dispatchd.admin", {"dispatchd.admin"}),
        ("dispatchd.dispatchd:admin", {"dispatchd:admin"}),
        ("openid dispatchd:viewer dispatchd.operator", {"openid", "viewer", "operator"}),
    ],
)
def test_a_role_prefix_is_removed_once(creds: Credentials, scope: str, roles: set[str]) -> None:
    principal = verifier(creds).verify(creds.token("mallory", extra={"scope": scope}))
    assert principal.roles == roles


def test_a_principal_is_valid_until_exp_plus_the_leeway(creds: Credentials) -> None:
    check = verifier(creds)
    principal = check.verify(creds.token("w", "worker", ttl_seconds=60))
    assert principal.valid_until == principal.expires_at + check.leeway
    assert principal.expires_at == pytest.approx(time.time() + 60, abs=2)
