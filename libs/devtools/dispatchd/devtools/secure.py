"""`make up --secure` (or DISPATCHD_SECURE=1): the local stack with JWT auth, TLS 1.3 and client certificates.

Everything lives under `<data-dir>/secure/` and is created on first use (the CA and the
signing key are kept between runs; certificates and tokens are renewed every run):

    certs/    ca.pem, server.pem/.key, clients/dispatchctl.pem/.key, workers/<id>.pem/.key
    jwt/      dev-1.key (ES256 signing key), dev-1.pem, jwks.json (what the services trust)
    tokens/   admin.jwt (sub "developer", role admin), <worker-id>.jwt (role worker)
    paging/   key (signs page tokens; kept between runs)
    env.sh    `source` it to point dispatchctl at the secured stack

The services run with the same settings production needs (auth on, ES256 from a JWKS file,
TLS with required client certificates), so the guardrail of APP_ENV=production passes too.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools import tokens
from dispatchd.devtools.certs import DevPki

KID = "dev-1"
CLI_NAME = "dispatchctl"
TOKEN_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class SecureSetup:
    root: Path
    pki: DevPki
    issuer: str
    audience: str

    @property
    def jwks(self) -> Path:
        return self.root / "jwt" / "jwks.json"

    @property
    def admin_token(self) -> Path:
        return self.root / "tokens" / "admin.jwt"

    def worker_token(self, worker_id: str) -> Path:
        return self.root / "tokens" / f"{worker_id}.jwt"

    def server_env(self) -> dict[str, str]:
        cert, key = self.pki.server
        return {
            "DISPATCHD_AUTH_ENABLED": "true",
            "DISPATCHD_JWT_ISSUER": self.issuer,
            "DISPATCHD_JWT_AUDIENCE": self.audience,
            "DISPATCHD_JWT_ALGORITHMS": "ES256",
            "DISPATCHD_JWT_JWKS_FILE": str(self.jwks),
            "DISPATCHD_TLS_CERT_FILE": str(cert),
            "DISPATCHD_TLS_KEY_FILE": str(key),
            "DISPATCHD_TLS_CLIENT_CA_FILE": str(self.pki.ca),
            "DISPATCHD_TLS_REQUIRE_CLIENT_CERT": "true",
            "DISPATCHD_PAGE_TOKEN_SECRET_FILE": str(page_token_key(self.root / "paging" / "key")),
        }

    def cli(self) -> ClientSecurity:
        cert, key = self.pki.client(CLI_NAME)
        return ClientSecurity(token_file=self.admin_token, ca=self.pki.ca, cert=cert, key=key)

    def cli_env(self) -> dict[str, str]:
        cert, key = self.pki.client(CLI_NAME)
        return {
            "DISPATCHD_TOKEN_FILE": str(self.admin_token),
            "DISPATCHD_CA": str(self.pki.ca),
            "DISPATCHD_CERT": str(cert),
            "DISPATCHD_KEY": str(key),
        }

    def worker_args(self, worker_id: str) -> list[str]:
        cert, key = self.pki.worker(worker_id)
        return [
            "--token-file", str(self.worker_token(worker_id)),
            "--ca", str(self.pki.ca),
            "--cert", str(cert),
            "--key", str(key),
        ]  # fmt: skip

    @property
    def env_file(self) -> Path:
        return self.root / "env.sh"


def page_token_key(path: Path) -> Path:
    """`path`, holding a random page-token key (created on first use, then kept)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(secrets.token_urlsafe(48) + "\n")
        partial.chmod(0o600)
        partial.replace(path)
    return path


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(token + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def prepare(
    root: Path,
    worker_ids: Sequence[str],
    *,
    issuer: str = tokens.DEFAULT_ISSUER,
    audience: str = tokens.DEFAULT_AUDIENCE,
) -> SecureSetup:
    pki = DevPki(root / "certs")
    pki.create(clients=[CLI_NAME], workers=worker_ids)
    jwt_dir = root / "jwt"
    key_path = jwt_dir / f"{KID}.key"
    key = tokens.load_private(key_path) if key_path.exists() else tokens.keygen(jwt_dir, KID, "ES256")
    setup = SecureSetup(root, pki, issuer, audience)

    def mint(subject: str, role: str) -> str:
        return tokens.mint(
            key, subject=subject, roles=[role], kid=KID, issuer=issuer, audience=audience, ttl_seconds=TOKEN_TTL_SECONDS
        )

    _write_token(setup.admin_token, mint("developer", "admin"))
    for worker_id in worker_ids:
        _write_token(setup.worker_token(worker_id), mint(worker_id, "worker"))
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in setup.cli_env().items())
    setup.env_file.write_text("# source me: dispatchctl then talks to the secured `make up` stack\n" + exports)
    return setup
