"""Development tokens: a signing key pair, and tokens for a role and subject.

    python -m dispatchd.devtools.tokens keygen --out .dispatchd/jwt --kid dev-1 [--alg ES256|RS256]
    python -m dispatchd.devtools.tokens mint --key .dispatchd/jwt/dev-1.key --sub alice --role submitter
    python -m dispatchd.devtools.tokens mint --secret "$DISPATCHD_JWT_HS256_SECRET" --sub w1 --role worker

`keygen` writes `<kid>.key` (private, PEM), `<kid>.pem` (public, PEM: a valid
DISPATCHD_JWT_PUBLIC_KEY_FILES entry, whose kid is the file name) and adds the public key to
`jwks.json` in the same directory (DISPATCHD_JWT_JWKS_FILE), keeping the keys already there:
run it again with a new kid to rotate. `mint` prints a token; `--iss` and `--aud` default to
DISPATCHD_JWT_ISSUER / DISPATCHD_JWT_AUDIENCE (or the services' defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

DEFAULT_ISSUER = "dispatchd-dev"
DEFAULT_AUDIENCE = "dispatchd"
DEFAULT_TTL_SECONDS = 3600

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def generate(alg: str = "ES256") -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"keygen supports ES256 and RS256, not {alg}")


def algorithm_of(key: PrivateKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    public = key.public_key()
    entry: dict[str, Any] = json.loads(
        RSAAlgorithm.to_jwk(public) if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm.to_jwk(public)
    )
    entry.update({"kid": kid, "use": "sig", "alg": algorithm_of(key)})
    return entry


def load_private(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an RSA or EC private key")
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)  # atomic: a service re-reading the file never sees half of it


def keygen(out: Path, kid: str, alg: str = "ES256") -> PrivateKey:
    out.mkdir(parents=True, exist_ok=True)
    key = generate(alg)
    _write(out / f"{kid}.key", private_pem(key), 0o600)
    _write(out / f"{kid}.pem", public_pem(key), 0o644)
    jwks_path = out / "jwks.json"
    keys = json.loads(jwks_path.read_text())["keys"] if jwks_path.exists() else []
    keys = [k for k in keys if k.get("kid") != kid] + [jwk(key, kid)]
    _write(jwks_path, json.dumps({"keys": keys}, indent=2).encode(), 0o644)
    return key


def mint(
    key: PrivateKey | bytes,
    *,
    subject: str,
    roles: Sequence[str],
    kid: str | None = None,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    not_before: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed token: ES256/RS256 with a private key, HS256 with a bytes secret."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": list(roles),
        "iat": now,
        "exp": now + int(ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    claims.update(extra or {})
    headers = {"kid": kid} if kid else None
    if isinstance(key, bytes):
        return jwt.encode(claims, key, algorithm="HS256", headers=headers)
    return jwt.encode(claims, key, algorithm=algorithm_of(key), headers=headers)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatchd.devtools.tokens", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="create a signing key pair and add it to jwks.json")
    k.add_argument("--out", type=Path, default=Path(".dispatchd/jwt"))
    k.add_argument("--kid", default="dev-1", help="key id (default %(default)s)")
    k.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    m = sub.add_parser("mint", help="print a token for a subject and roles")
    source = m.add_mutually_exclusive_group(required=True)
    source.add_argument("--key", type=Path, help="private key (PEM) for ES256/RS256")
    source.add_argument("--secret", help="HS256 shared secret (development only)")
    m.add_argument("--kid", help="key id header (default: the key file's name)")
    m.add_argument("--sub", required=True, help="subject (a worker's token: its worker id)")
    m.add_argument("--role", action="append", required=True, help="role (repeatable): submitter, viewer, ...")
    m.add_argument("--iss", default=os.environ.get("DISPATCHD_JWT_ISSUER") or DEFAULT_ISSUER)
    m.add_argument("--aud", default=os.environ.get("DISPATCHD_JWT_AUDIENCE") or DEFAULT_AUDIENCE)
    m.add_argument("--ttl", type=_duration, default=float(DEFAULT_TTL_SECONDS), help="lifetime: 3600, 30m, 12h, 7d")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        keygen(args.out, args.kid, args.alg)
        print(f"private key: {args.out / (args.kid + '.key')}")
        print(f"public key:  {args.out / (args.kid + '.pem')}  (DISPATCHD_JWT_PUBLIC_KEY_FILES)")
        print(f"JWKS:        {args.out / 'jwks.json'}  (DISPATCHD_JWT_JWKS_FILE)")
        return 0
    signing: PrivateKey | bytes
    if args.key is not None:
        signing = load_private(args.key)
        kid = args.kid or args.key.stem
    else:
        signing, kid = args.secret.encode(), args.kid
    token = mint(
        signing, subject=args.sub, roles=args.role, kid=kid, issuer=args.iss, audience=args.aud, ttl_seconds=args.ttl
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
