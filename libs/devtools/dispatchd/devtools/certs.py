"""Development certificates: a private CA, a server certificate and client certificates.

    python -m dispatchd.devtools.certs --out .dispatchd/certs --client dispatchctl --worker worker-1

writes, under `--out`:

    ca.pem / ca.key                 the development CA (trust it in clients and servers)
    server.pem / server.key         serverAuth, SANs: every --host (default localhost, 127.0.0.1, ::1)
    clients/<name>.pem / .key       clientAuth, CN=<name>, SAN URI spiffe://dispatchd.dev/client/<name>
    workers/<id>.pem / .key         clientAuth, CN=<id>,   SAN URI spiffe://dispatchd.dev/worker/<id>

A worker certificate's identity is its worker id (see dispatchd.platform.security.identity),
so a worker can only register under the id its certificate names. An existing CA is
reused (so earlier certificates stay valid) unless `--new-ca` is given. For development and
tests only: the keys are written unencrypted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "dispatchd.dev"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        # Written next to the target and renamed: a server watching the files never reads half a file.
        _atomic_write(key_path, self.key_pem(), mode=0o600)
        _atomic_write(cert_path, self.cert_pem(), mode=0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dispatchd development"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_ca(
    common_name: str = "dispatchd development CA",
    days: int = 3650,
    *,
    parent: Issued | None = None,
    path_length: int | None = 0,
) -> Issued:
    """A self-signed CA, or an intermediate signed by `parent`; `path_length` CAs may sit below it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, "ca")
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.cert.subject if parent else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        issuer_key = x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key())
        builder = builder.add_extension(issuer_key, critical=False)
    return Issued(builder.sign(parent.key if parent else key, hashes.SHA256()), key)


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for value in names:
        if "://" in value:
            entries.append(x509.UniformResourceIdentifier(value))
            continue
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            entries.append(x509.DNSName(value))
    return entries


def issue(
    ca: Issued,
    common_name: str,
    *,
    names: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = DEFAULT_DAYS,
    unit: str = "dispatchd",
    not_before: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`; `names` become SANs (DNS, IP or URI by their shape)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def server_cert(ca: Issued, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS) -> Issued:
    return issue(ca, hosts[0] if hosts else "localhost", names=hosts, server=True, days=days, unit="server")


def client_cert(ca: Issued, name: str, days: int = DEFAULT_DAYS) -> Issued:
    uri = f"spiffe://{TRUST_DOMAIN}/client/{name}"
    return issue(ca, name, names=[uri], client=True, days=days, unit="client")


def worker_cert(ca: Issued, worker_id: str, days: int = DEFAULT_DAYS) -> Issued:
    uri = f"spiffe://{TRUST_DOMAIN}/worker/{worker_id}"
    return issue(ca, worker_id, names=[uri], client=True, days=days, unit="worker")


def load(cert_path: Path, key_path: Path) -> Issued:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return Issued(cert, key)


@dataclass(frozen=True)
class DevPki:
    """The file layout `main` writes; tests and `make up --secure` use the same one."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server(self) -> tuple[Path, Path]:
        return self.root / "server.pem", self.root / "server.key"

    def client(self, name: str) -> tuple[Path, Path]:
        return self.root / "clients" / f"{name}.pem", self.root / "clients" / f"{name}.key"

    def worker(self, worker_id: str) -> tuple[Path, Path]:
        return self.root / "workers" / f"{worker_id}.pem", self.root / "workers" / f"{worker_id}.key"

    def load_or_create_ca(self, new: bool = False) -> Issued:
        if not new and self.ca.exists() and self.ca_key.exists():
            return load(self.ca, self.ca_key)
        ca = new_ca()
        self.root.mkdir(parents=True, exist_ok=True)
        ca.write(self.ca, self.ca_key)
        return ca

    def create(
        self,
        *,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        clients: Sequence[str] = (),
        workers: Sequence[str] = (),
        days: int = DEFAULT_DAYS,
        new_ca: bool = False,
    ) -> Issued:
        ca = self.load_or_create_ca(new_ca)
        server_cert(ca, hosts, days).write(*self.server)
        for name in clients:
            client_cert(ca, name, days).write(*self.client(name))
        for worker_id in workers:
            worker_cert(ca, worker_id, days).write(*self.worker(worker_id))
        return ca


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dispatchd.devtools.certs", description="Create a development CA and certificates."
    )
    parser.add_argument("--out", type=Path, default=Path(".dispatchd/certs"), help="directory (default %(default)s)")
    parser.add_argument(
        "--host", action="append", default=[], help=f"server SAN, repeatable (default {', '.join(DEFAULT_HOSTS)})"
    )
    parser.add_argument("--client", action="append", default=[], metavar="NAME", help="client certificate (repeatable)")
    parser.add_argument(
        "--worker", action="append", default=[], metavar="WORKER_ID", help="worker certificate (repeatable)"
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity of the leaf certificates")
    parser.add_argument("--new-ca", action="store_true", help="replace an existing CA (invalidates old certificates)")
    args = parser.parse_args(argv)
    pki = DevPki(args.out)
    pki.create(
        hosts=args.host or DEFAULT_HOSTS,
        clients=args.client or ["dispatchctl"],
        workers=args.worker,
        days=args.days,
        new_ca=args.new_ca,
    )
    print(f"CA:      {pki.ca}")
    print(f"server:  {pki.server[0]} (key {pki.server[1]})")
    for name in args.client or ["dispatchctl"]:
        print(f"client:  {pki.client(name)[0]}")
    for worker_id in args.worker:
        print(f"worker:  {pki.worker(worker_id)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
