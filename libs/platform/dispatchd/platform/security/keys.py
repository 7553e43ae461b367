"""Verification keys for JWTs, re-read when their files change (so keys rotate without a restart).

Sources: PEM files (a public key or a certificate each; the key id is the file name without
its extension) and a JWKS file (`{"keys": [...]}`, RSA and EC keys chosen by `kid`). Symmetric
keys never come from these files: an HS256 secret is a separate, development-only setting.

Files are checked at most once per `recheck_seconds` (and at once when a token names a key id
nobody knows, the usual sign of a rotation). A file that fails to load keeps the previous keys
and logs why: a half-written file must not lock everyone out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWKError

log = logging.getLogger("dispatchd.security.keys")

RSA_ALGORITHMS = frozenset({"RS256"})
EC_ALGORITHMS = frozenset({"ES256"})
MIN_RSA_BITS = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyFileError(ValueError):
    """A key file cannot be used (the message names the file and why)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    key: PublicKey
    # The algorithm the JWKS entry pins, if any; otherwise any algorithm of the key's type.
    alg: str | None
    source: str

    def accepts(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if isinstance(self.key, rsa.RSAPublicKey):
            return alg in RSA_ALGORITHMS
        return alg in EC_ALGORITHMS and isinstance(self.key.curve, ec.SECP256R1)


def _check(key: object, source: str) -> PublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{source}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"{source}: EC key on {key.curve.name}; ES256 needs P-256")
        return key
    raise KeyFileError(f"{source}: only RSA and EC public keys can verify tokens, not {type(key).__name__}")


def load_pem(path: Path) -> VerificationKey:
    data = path.read_bytes()
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key or certificate ({exc})") from None
    return VerificationKey(kid=path.stem, key=_check(key, str(path)), alg=None, source=str(path))


def load_jwks(path: Path) -> list[VerificationKey]:
    try:
        document = json.loads(path.read_bytes())
    except ValueError as exc:
        raise KeyFileError(f"{path}: not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError(f'{path}: a JWKS document is an object with a "keys" list')
    keys: list[VerificationKey] = []
    for index, entry in enumerate(entries):
        where = f"{path} keys[{index}]"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where}: not an object")
        if entry.get("kty") not in ("RSA", "EC"):
            raise KeyFileError(f"{where}: kty {entry.get('kty')!r}; only RSA and EC public keys are accepted")
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key published alongside; not for us
        if "d" in entry:
            raise KeyFileError(f"{where}: contains a private key; publish only the public part")
        try:
            key = PyJWK.from_dict(entry).key
        except (PyJWKError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{where}: {exc}") from None
        alg = entry.get("alg")
        keys.append(
            VerificationKey(
                kid=str(entry.get("kid") or ""),
                key=_check(key, where),
                alg=str(alg) if alg else None,
                source=where,
            )
        )
    return keys


def _signature(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    result = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            result.append((0, 0, 0))
        else:
            result.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(result)


class KeySet:
    """The current verification keys from PEM files and/or a JWKS file."""

    def __init__(
        self, pem_files: Sequence[Path] = (), jwks_file: Path | None = None, recheck_seconds: float = 1.0
    ) -> None:
        self.pem_files = list(pem_files)
        self.jwks_file = jwks_file
        self.recheck_seconds = recheck_seconds
        self._paths = [*self.pem_files, *([jwks_file] if jwks_file else [])]
        self._keys: list[VerificationKey] = []
        self._seen: tuple[Any, ...] = ()
        self._checked = 0.0
        self.reload(strict=True)

    @property
    def configured(self) -> bool:
        return bool(self._paths)

    def _load(self) -> list[VerificationKey]:
        keys = [load_pem(path) for path in self.pem_files]
        if self.jwks_file is not None:
            keys += load_jwks(self.jwks_file)
        return keys

    def reload(self, strict: bool = False) -> None:
        """Load the files; at startup (`strict`) a bad file is fatal, later it keeps the old keys."""
        signature = _signature(self._paths)
        try:
            keys = self._load()
        except (OSError, KeyFileError) as exc:
            if strict:
                raise KeyFileError(str(exc)) from None
            log.warning("keeping the previous token verification keys: %s", exc)
            return
        finally:
            self._checked = time.monotonic()
        if self._seen and keys != self._keys:
            log.info("token verification keys reloaded", extra={"fields": {"kids": [k.kid for k in keys]}})
        self._keys, self._seen = keys, signature

    def _refresh(self, force: bool = False) -> None:
        if not self._paths:
            return
        if not force and time.monotonic() - self._checked < self.recheck_seconds:
            return
        self._checked = time.monotonic()
        if _signature(self._paths) != self._seen:
            self.reload()

    def candidates(self, alg: str, kid: str | None) -> list[VerificationKey]:
        """Keys to try for a token: those with its `kid` if any match, else every key for `alg`."""
        self._refresh()
        usable = [k for k in self._keys if k.accepts(alg)]
        if kid:
            named = [k for k in usable if k.kid == kid]
            if not named and any(k.kid for k in self._keys):
                # Maybe a key we have not seen yet: re-read before giving up on it.
                self._refresh(force=True)
                usable = [k for k in self._keys if k.accepts(alg)]
                named = [k for k in usable if k.kid == kid]
            if named:
                return named
        return usable

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]
