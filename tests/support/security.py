"""Trust material and a secured stack (auth + TLS + client certificates) for the security tests.

`Credentials` holds a development CA with server, client and worker certificates, a second CA
nobody trusts, and signing keys: `es-1` (ES256, published in a JWKS file), `rs-1` (RS256, a
PEM file) and `rogue` (ES256, trusted by nobody). `SecureStack` runs the control plane,
the worker gateway and a scheduler as separate processes with APP_ENV=production, each with a
plaintext health-only port for readiness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dispatchd.devtools import tokens
from dispatchd.devtools.certs import DevPki
from dispatchd.devtools.stores import free_port
from dispatchd.platform.security.client import ClientSecurity
from dispatchd.v1 import job_service_pb2_grpc
from tests.support.processes import ServiceProcess, python_module_argv

ISSUER = "https://issuer.dispatchd.test"
AUDIENCE = "dispatchd-test"
CLIENTS = ("admin-cli", "alice", "bob")
WORKERS = ("worker-a", "worker-b")


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
        }

    def client(self, name: str = "admin-cli", token: str | None = None, other_ca: bool = False) -> ClientSecurity:
        pki = self.other_pki if other_ca else self.pki
        cert, key = pki.client(name)
        return ClientSecurity(token=token, ca=self.pki.ca, cert=cert, key=key)

    def worker(self, worker_id: str, token: str | None = None) -> ClientSecurity:
        cert, key = self.pki.worker(worker_id)
        return ClientSecurity(token=token, ca=self.pki.ca, cert=cert, key=key)


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


def add_jwks_key(creds: Credentials, kid: str) -> None:
    """Rotate: publish a new ES256 key in the JWKS file (atomically), keeping the old ones."""
    creds.keys[kid] = tokens.keygen(creds.jwks_file.parent, kid, "ES256")
    assert json.loads(creds.jwks_file.read_text())["keys"][-1]["kid"] == kid


@dataclass
class SecureStack:
    creds: Credentials
    env: dict[str, str]
    control_plane: str
    gateway: str
    health: dict[str, str]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    _channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self, security: ClientSecurity, target: str | None = None) -> grpc.Channel:
        channel = security.sync_channel(target or self.control_plane, options=[("grpc.enable_http_proxy", 0)])
        self._channels.append(channel)
        return channel

    def jobs(self, client: str = "admin-cli") -> job_service_pb2_grpc.JobServiceStub:
        return job_service_pb2_grpc.JobServiceStub(self.channel(self.creds.client(client)))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


def start_secure_stack(
    spawn: Callable[[str, list[str], dict[str, str]], ServiceProcess],
    creds: Credentials,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    **extra: str,
) -> SecureStack:
    ports = {name: free_port() for name in ("cp", "gw", "sch", "cp_h", "gw_h", "sch_h")}
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_REDIS_PREFIX": redis_prefix,
        "DISPATCHD_CONTROL_PLANE_LISTEN": f"127.0.0.1:{ports['cp']}",
        "DISPATCHD_GATEWAY_LISTEN": f"127.0.0.1:{ports['gw']}",
        "DISPATCHD_SCHEDULER_LISTEN": f"127.0.0.1:{ports['sch']}",
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "2",
        "DISPATCHD_LOG_LEVEL": "INFO",
        **creds.server_env(),
        **extra,
    }
    stack = SecureStack(
        creds=creds,
        env=env,
        control_plane=env["DISPATCHD_CONTROL_PLANE_LISTEN"],
        gateway=env["DISPATCHD_GATEWAY_LISTEN"],
        health={
            "control-plane": f"127.0.0.1:{ports['cp_h']}",
            "worker-gateway": f"127.0.0.1:{ports['gw_h']}",
            "scheduler": f"127.0.0.1:{ports['sch_h']}",
        },
    )
    modules = {
        "control-plane": "dispatchd.control_plane.main",
        "worker-gateway": "dispatchd.worker_gateway.main",
        "scheduler": "dispatchd.scheduler.main",
    }
    for name, module in modules.items():
        process_env = {**env, "DISPATCHD_HEALTH_LISTEN": stack.health[name]}
        stack.processes[name] = spawn(name, python_module_argv(module), process_env)
    for name in modules:
        stack.processes[name].wait_healthy(stack.health[name], timeout=30)
    return stack


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
        "not a JWT": "not-a-token",
        "garbage segments": "a.b.c",
        "oversized": "x" * 9000,
    }


def _without(creds: Credentials, claim: str) -> str:
    import jwt

    body = claims()
    del body[claim]
    return jwt.encode(body, creds.keys["es-1"], algorithm="ES256", headers={"kid": "es-1"})
