"""Server TLS that follows certificate rotation, and what a client certificate says.

Reload: gRPC asks `CertificateFiles.fetch` for the certificate configuration at every new TLS
handshake (`grpc.dynamic_ssl_server_credentials`). It stats the three files (cheap) and
returns a new configuration only when one changed and the new files load and match (the key
belongs to the certificate), so a rotation by cert-manager (an atomic symlink swap) takes
effect for the next connection without a restart, and a half-written file is ignored until
it is complete. Connections already open keep the certificate they were made with.

TLS 1.3: grpcio's Python API cannot set the minimum protocol version of the handshake, so
the interceptor refuses every call on a connection that negotiated anything older
(`require_tls13`) with UNAUTHENTICATED.

Client identity: the set of names a verified client certificate carries: its subject CN,
every SAN (DNS names, URIs, e-mail, IPs) and, for URI SANs, their last path segment (so
`spiffe://example.org/ns/jobs/worker/w-1` identifies `w-1`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dispatchd.platform.security.settings import TlsFiles

log = logging.getLogger("dispatchd.security.tls")

TLS13 = b"TLSv1.3"


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[tuple[int, int, int], ...]
    cert: bytes
    key: bytes
    ca: bytes | None

    def configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.ca)


def _stat(paths: Sequence[os.PathLike[str]]) -> tuple[tuple[int, int, int], ...]:
    result = []
    for path in paths:
        try:
            st = os.stat(path)
            result.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            result.append((0, 0, 0))
    return tuple(result)


class CertificateFiles:
    """The server's certificate, key and client CA, re-read when they change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._paths: list[os.PathLike[str]] = [files.cert, files.key, *([files.client_ca] if files.client_ca else [])]
        self._lock = threading.Lock()  # gRPC calls fetch from its own threads
        self.current = self._load()
        self.reloads = 0

    def _load(self) -> _Loaded:
        signature = _stat(self._paths)
        cert = self.files.cert.read_bytes()
        key = self.files.key.read_bytes()
        ca = self.files.client_ca.read_bytes() if self.files.client_ca else None
        _check_pair(cert, key)
        if ca is not None:
            x509.load_pem_x509_certificates(ca)
        return _Loaded(signature, cert, key, ca)

    def fetch(self) -> Any:
        """gRPC's certificate-config fetcher: a new configuration, or None to keep the current one."""
        with self._lock:
            if _stat(self._paths) == self.current.signature:
                return None
            try:
                loaded = self._load()
            except (OSError, ValueError) as exc:
                log.warning("TLS files changed but cannot be used yet; keeping the current ones: %s", exc)
                return None
            if (loaded.cert, loaded.key, loaded.ca) == (self.current.cert, self.current.key, self.current.ca):
                self.current = loaded
                return None
            self.current = loaded
            self.reloads += 1
            log.info("TLS certificate files reloaded", extra={"fields": {"cert_file": str(self.files.cert)}})
            return loaded.configuration()

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.current.configuration(),
            self.fetch,
            require_client_authentication=self.files.require_client_cert,
        )


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, public) != key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ValueError("the private key does not belong to the certificate")


# --------------------------------------------------------------------------- peers


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    common_name: str
    sans: tuple[str, ...]

    @property
    def identities(self) -> frozenset[str]:
        names = {self.common_name} if self.common_name else set()
        for san in self.sans:
            names.add(san)
            if "://" in san:
                tail = san.rstrip("/").rsplit("/", 1)[-1]
                if tail and "://" not in tail and ":" not in tail:
                    names.add(tail)
        return frozenset(names)

    @property
    def label(self) -> str:
        """Short form for logs: the first URI SAN, else the CN."""
        uris = [s for s in self.sans if "://" in s]
        return uris[0] if uris else self.common_name


def _text(values: Iterable[bytes] | None) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values or ()]


def peer_certificate(auth_context: Mapping[str, Iterable[bytes]]) -> PeerCertificate | None:
    """The verified client certificate of a TLS connection, or None (plaintext, or no cert)."""
    if b"ssl" not in (auth_context.get("transport_security_type") or ()):
        return None
    common = _text(auth_context.get("x509_common_name"))
    sans = tuple(_text(auth_context.get("x509_subject_alternative_name")))
    if not common and not sans:
        return None
    return PeerCertificate(common[0] if common else "", sans)


def tls_version(auth_context: Mapping[str, Iterable[bytes]]) -> bytes | None:
    if b"ssl" not in (auth_context.get("transport_security_type") or ()):
        return None
    versions = list(auth_context.get("ssl_tls_version") or ())
    return versions[0] if versions else b"unknown"
