"""TokenVerifier: every malformed, forged or misdirected token is refused with a reason."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest

from dispatchd.devtools import tokens
from dispatchd.platform.security.keys import KeyFileError, KeySet, load_jwks
from dispatchd.platform.security.tokens import Principal, TokenError, TokenVerifier, bearer_token
from tests.support.security import (
    AUDIENCE,
    ISSUER,
    Credentials,
    b64url,
    bad_tokens,
    claims,
    forge,
    make_credentials,
    verifier,
)

SECRET = b"s" * 40


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("tokens"))


def test_good_tokens(creds: Credentials) -> None:
    check = verifier(creds)
    principal = check.verify(creds.token("alice", "submitter", "viewer"))
    assert principal == Principal(
        subject="alice",
        roles=frozenset({"submitter", "viewer"}),
        issuer=ISSUER,
        token_id=principal.token_id,
        expires_at=principal.expires_at,
        valid_until=principal.expires_at + 5,
    )
    assert principal.expires_at > time.time()
    assert check.verify(creds.token("bob", "admin", key="rs-1")).roles == {"admin"}
    assert check.verify(creds.token("bob", "admin", key="rs-1", kid=None)).subject == "bob"


BAD = [
        "expired",
        "not yet valid",
        "wrong issuer",
        "wrong audience",
        "signed by another key (same kid)",
        "signed by another key (unknown kid)",
        "signed by another key (no kid)",
        "alg none",
        "alg none, uppercase",
        "HS256 with the RSA public key",
        "tampered payload",
        "missing sub",
        "missing exp",
        "missing iss",
        "missing aud",
        "empty sub",
        "exp as a numeric string",
        "not a JWT",
        "garbage segments",
        "oversized",
    ]


@pytest.mark.parametrize("name", BAD)
def test_bad_tokens_are_refused(creds: Credentials, name: str) -> None:
    token = bad_tokens(creds)[name]
    with pytest.raises(TokenError):
        verifier(creds).verify(token)
    # Allowing HS256 for development changes nothing for these: the secret is not the public key.
    with pytest.raises(TokenError):
        verifier(creds, ["RS256", "ES256", "HS256"], SECRET).verify(token)


def test_every_bad_token_kind_is_covered(creds: Credentials) -> None:
    # bad_tokens is the one list the unit and the end-to-end tests share.
    assert set(BAD) == set(bad_tokens(creds))


def test_hs256_only_for_development(creds: Credentials) -> None:
    body = claims("dev", "admin")
    token = jwt.encode(body, SECRET, algorithm="HS256")
    assert verifier(creds, ["ES256", "HS256"], SECRET).verify(token).subject == "dev"
    with pytest.raises(TokenError, match="'HS256' is not allowed"):
        verifier(creds).verify(token)
    wrong = jwt.encode(body, b"t" * 40, algorithm="HS256")
    with pytest.raises(TokenError, match="signature"):
        verifier(creds, ["ES256", "HS256"], SECRET).verify(wrong)
    # HS256 keyed with the RSA public key (the classic confusion attack) fails with HS256 allowed.
    public = creds.rs_public_file.read_bytes()
    confused = forge({"alg": "HS256"}, body, lambda data: hmac.new(public, data, hashlib.sha256).digest())
    with pytest.raises(TokenError):
        verifier(creds, ["RS256", "HS256"], SECRET).verify(confused)


def test_keys_are_chosen_by_algorithm_family(creds: Credentials) -> None:
    # The kid names an EC key but the token is RS256: only RSA keys are tried, and one verifies.
    token = creds.token("x", "admin", key="rs-1", kid="es-1")
    assert verifier(creds).verify(token).subject == "x"
    # Relabelled as ES256, the same RSA signature never meets the RSA key.
    _, body, signature = token.split(".")
    relabelled = b64url(json.dumps({"alg": "ES256", "kid": "rs-1"}).encode())
    with pytest.raises(TokenError):
        verifier(creds).verify(f"{relabelled}.{body}.{signature}")


def test_verifier_configuration_is_checked(creds: Credentials) -> None:
    keys = KeySet([creds.rs_public_file])
    with pytest.raises(ValueError, match="unsupported"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=["none"], keys=keys)
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"], keys=keys, hs256_secret=b"short")
    with pytest.raises(ValueError, match="not among the allowed"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], keys=keys, hs256_secret=SECRET)
    with pytest.raises(ValueError, match="need public keys"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], keys=KeySet())
    with pytest.raises(ValueError, match="issuer and audience"):
        TokenVerifier(issuer="", audience=AUDIENCE, algorithms=["RS256"], keys=keys)


def test_pem_keys_rotate_on_disk(tmp_path: Path) -> None:
    old, new = tokens.generate("ES256"), tokens.generate("ES256")
    pem = tmp_path / "signing.pem"
    pem.write_bytes(tokens.public_pem(old))
    keys = KeySet([pem], recheck_seconds=0)
    check = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], keys=keys)
    mint = lambda key: tokens.mint(key, subject="s", roles=["viewer"], issuer=ISSUER, audience=AUDIENCE)  # noqa: E731
    assert check.verify(mint(old)).subject == "s"
    pem.write_bytes(tokens.public_pem(new))
    os.utime(pem, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert check.verify(mint(new)).subject == "s"
    with pytest.raises(TokenError):
        check.verify(mint(old))
    # A broken file keeps the last good keys.
    pem.write_text("not a key")
    assert check.verify(mint(new)).subject == "s"


def test_jwks_rejects_private_and_symmetric_keys(tmp_path: Path) -> None:
    key = tokens.generate("ES256")
    entry = tokens.jwk(key, "k")
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    cases = {
        "private key": {"keys": [{**private, "kid": "k"}]},
        "only RSA and EC": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]},
        '"keys" list': {"keys": "nope"},
    }
    for words, document in cases.items():
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(document))
        with pytest.raises(KeyFileError, match=words):
            load_jwks(path)
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"keys": [entry, {**entry, "kid": "enc", "use": "enc"}]}))
    assert [k.kid for k in load_jwks(path)] == ["k"]


def test_small_rsa_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pem"
    path.write_bytes(tokens.public_pem(small))
    with pytest.raises(KeyFileError, match="at least 2048"):
        KeySet([path])


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer  ", "", "token"])
def test_bearer_header_format(header: str) -> None:
    with pytest.raises(TokenError):
        bearer_token(header)
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc") == "abc"
