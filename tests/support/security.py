"""Trust material and a secured stack (auth + TLS + client certificates) for the security tests.

`Credentials` holds a development CA with server, client and worker certificates, a second CA
nobody trusts, and signing keys: `es-1` (ES256, published in a JWKS file), `rs-1` (RS256, a
PEM file) and `rogue` (ES256, trusted by nobody); it is the `Security` of a devtools stack.
`SecureStack` is that stack: the control plane, the worker gateway and a scheduler as separate
processes with APP_ENV=production, each with a plaintext health-only port for readiness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools import tokens
from dispatchd.devtools.certs import DevPki
from dispatchd.devtools.secure import page_token_key
from dispatchd.devtools.stack import Stack, Stores, Topology
from dispatchd.platform.security.keys import KeySet
from dispatchd.platform.security.tokens import TokenVerifier

ISSUER = "https://issuer.dispatchd.test"
AUDIENCE = "dispatchd-test"
CLIENTS = ("admin-cli", "alice", "bob")
WORKERS = ("worker-a", "worker-b")
# Byte strings protobuf cannot decode: a truncated varint, bad UTF-8 in a string field, a cut-off field.
CORRUPT = [b"\xff\xff\xff", b"\x0a\x05\xff\xfe\xfd", b"\x12", b"\x0a\x02\xc3\x28"]


@dataclass
class Credentials:
    root: Path
    pki: DevPki
    other_pki: DevPki
    keys: dict[str, tokens.PrivateKey]
    jwks_file: Path
    rs_public_file: Path

    def token(
        self,
        subject: str,
        *roles: str,
        key: str = "es-1",
        kid: str | None = "",
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        ttl_seconds: float = 600,
        not_before: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A token signed by `key` with `kid` (default: the key's own name; None: no kid)."""
        return tokens.mint(
            self.keys[key],
            subject=subject,
            roles=roles,
            kid=key if kid == "" else kid,
            issuer=issuer,
            audience=audience,
            ttl_seconds=ttl_seconds,
            not_before=not_before,
            extra=extra,
        )

    def server_env(self) -> dict[str, str]:
        cert, key = self.pki.server
        return {
            "APP_ENV": "production",
            "DISPATCHD_AUTH_ENABLED": "true",
            "DISPATCHD_JWT_ISSUER": ISSUER,
            "DISPATCHD_JWT_AUDIENCE": AUDIENCE,
            "DISPATCHD_JWT_ALGORITHMS": "RS256,ES256",
            "DISPATCHD_JWT_JWKS_FILE": str(self.jwks_file),
            "DISPATCHD_JWT_PUBLIC_KEY_FILES": str(self.rs_public_file),
            "DISPATCHD_JWT_LEEWAY_SECONDS": "5",
            "DISPATCHD_TLS_CERT_FILE": str(cert),
            "DISPATCHD_TLS_KEY_FILE": str(key),
            "DISPATCHD_TLS_CLIENT_CA_FILE": str(self.pki.ca),
            "DISPATCHD_TLS_REQUIRE_CLIENT_CERT": "true",
            "DISPATCHD_PAGE_TOKEN_SECRET_FILE": str(page_token_key(self.root / "paging-key")),
        }

    def client(self, name: str = "admin-cli", token: str | None = None, other_ca: bool = False) -> ClientSecurity:
        pki = self.other_pki if other_ca else self.pki
        cert, key = pki.client(name)
        return ClientSecurity(token=token, ca=self.pki.ca, cert=cert, key=key)

    def worker(self, worker_id: str, token: str | None = None) -> ClientSecurity:
        cert, key = self.pki.worker(worker_id)
        return ClientSecurity(token=token, ca=self.pki.ca, cert=cert, key=key)

    def cli(self) -> ClientSecurity:
        return self.client()

    def worker_args(self, worker_id: str) -> list[str]:
        """A worker process's options: a fresh `worker` token for `worker_id`, its certificate."""
        token_file = self.root / "tokens" / f"{worker_id}.jwt"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(self.token(worker_id, "worker"))
        cert, key = self.pki.worker(worker_id)
        return ["--token-file", str(token_file), "--ca", str(self.pki.ca), "--cert", str(cert), "--key", str(key)]


def make_credentials(root: Path) -> Credentials:
    pki = DevPki(root / "pki")
    pki.create(clients=CLIENTS, workers=WORKERS)
    other = DevPki(root / "other-pki")
    other.create(clients=CLIENTS, workers=WORKERS)
    jwt_dir = root / "jwt"
    keys: dict[str, tokens.PrivateKey] = {"es-1": tokens.keygen(jwt_dir, "es-1", "ES256")}
    keys["rs-1"] = tokens.generate("RS256")
    rs_public = jwt_dir / "rs-1.pem"
    rs_public.write_bytes(tokens.public_pem(keys["rs-1"]))
    # Not trusted: signs tokens that must be refused.
    keys["rogue"] = tokens.generate("ES256")
    return Credentials(root, pki, other, keys, jwt_dir / "jwks.json", rs_public)


def verifier(creds: Credentials, algorithms: list[str] | None = None, secret: bytes = b"") -> TokenVerifier:
    """A verifier trusting `creds`' keys, as the secured stack's services do (5 s of leeway)."""
    keys = KeySet([creds.rs_public_file], creds.jwks_file)
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=algorithms or ["RS256", "ES256"],
        keys=keys,
        hs256_secret=secret,
        leeway_seconds=5,
    )


def add_jwks_key(creds: Credentials, kid: str) -> None:
    """Rotate: publish a new ES256 key in the JWKS file (atomically), keeping the old ones."""
    creds.keys[kid] = tokens.keygen(creds.jwks_file.parent, kid, "ES256")
    assert json.loads(creds.jwks_file.read_text())["keys"][-1]["kid"] == kid


class SecureStack(Stack):
    """A stack secured by `creds`; `health` names each service's plaintext health port."""

    def __init__(self, creds: Credentials, topology: Topology, directory: Path) -> None:
        super().__init__(topology, directory)
        self.creds = creds

    @property
    def control_plane(self) -> str:
        return self.control_plane_target

    @property
    def gateway(self) -> str:
        return self.gateway_target

    @property
    def health(self) -> dict[str, str]:
        return {name: process.health for name, process in self.processes.items() if process.health is not None}


def secure_topology(
    creds: Credentials, database_url: str, redis_url: str, redis_prefix: str, **settings: str
) -> Topology:
    """Control plane, gateway and one scheduler with APP_ENV=production (in creds' settings); no workers."""
    return Topology(
        schedulers=1,
        workers=(),
        stores=Stores(database_url=database_url, redis_url=redis_url, migrate=False),
        security=creds,
        health_ports=True,
        redis_prefix=redis_prefix,
        settings={"DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2", "DISPATCHD_LOG_LEVEL": "INFO", **settings},
    )


# --------------------------------------------------------------------------- hand-made tokens


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None = None) -> str:
    """A JWT assembled by hand (for tokens no library would make: alg none, HS256 with a public key)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64url(signature)}"


def claims(subject: str = "mallory", *roles: str, **overrides: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "roles": list(roles) or ["admin"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def bad_tokens(creds: Credentials) -> dict[str, str]:
    """Every kind of token the services must refuse with UNAUTHENTICATED, by name."""
    import hashlib
    import hmac
    import time

    now = time.time()
    rsa_public_pem = creds.rs_public_file.read_bytes()
    good = creds.token("mallory", "viewer")
    head, _, signature = good.split(".")
    tampered_claims = b64url(json.dumps(claims("mallory", "admin")).encode())
    return {
        "expired": creds.token("mallory", "admin", ttl_seconds=-120),
        "not yet valid": creds.token("mallory", "admin", not_before=now + 600),
        "wrong issuer": creds.token("mallory", "admin", issuer="https://evil.example"),
        "wrong audience": creds.token("mallory", "admin", audience="someone-else"),
        "signed by another key (same kid)": creds.token("mallory", "admin", key="rogue", kid="es-1"),
        "signed by another key (unknown kid)": creds.token("mallory", "admin", key="rogue", kid="rogue"),
        "signed by another key (no kid)": creds.token("mallory", "admin", key="rogue", kid=None),
        "alg none": forge({"alg": "none", "typ": "JWT"}, claims()),
        "alg none, uppercase": forge({"alg": "NONE", "typ": "JWT"}, claims()),
        "HS256 with the RSA public key": forge(
            {"alg": "HS256", "typ": "JWT", "kid": "rs-1"},
            claims(),
            lambda data: hmac.new(rsa_public_pem, data, hashlib.sha256).digest(),
        ),
        "tampered payload": f"{head}.{tampered_claims}.{signature}",
        "missing sub": _without(creds, "sub"),
        "missing exp": _without(creds, "exp"),
        "missing iss": _without(creds, "iss"),
        "missing aud": _without(creds, "aud"),
        "empty sub": creds.token("", "admin"),
        "exp as a numeric string": creds.token("mallory", "admin", extra={"exp": str(int(now) + 600)}),
        "not a JWT": "not-a-token",
        "garbage segments": "a.b.c",
        "oversized": "x" * 9000,
    }


def _without(creds: Credentials, claim: str) -> str:
    import jwt

    body = claims()
    del body[claim]
    return jwt.encode(body, creds.keys["es-1"], algorithm="ES256", headers={"kid": "es-1"})
