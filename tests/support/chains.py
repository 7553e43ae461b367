"""One trust root across regions, as the deploy/ manifests build it with cert-manager.

A root CA issues one intermediate per region; each region's leaves are issued by its own
intermediate. Invariant: a leaf's certificate file is a fullchain (the leaf, then its
intermediate, as cert-manager writes tls.crt) and the trust bundle holds roots only, so a
peer from any region verifies with the root alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dispatchd.devtools import certs


@dataclass(frozen=True)
class Region:
    """A region's intermediate CA, writing leaves it issues as fullchain files under `directory`."""

    name: str
    intermediate: certs.Issued
    directory: Path

    def write(self, leaf: certs.Issued, stem: str) -> tuple[Path, Path]:
        """`<stem>.pem` (leaf, then intermediate) and `<stem>.key`."""
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        leaf.write(cert_path, key_path)
        cert_path.write_bytes(leaf.cert_pem() + self.intermediate.cert_pem())
        return cert_path, key_path

    def server(self) -> tuple[Path, Path]:
        return self.write(certs.server_cert(self.intermediate), "server")

    def worker(self, worker_id: str) -> tuple[Path, Path]:
        return self.write(certs.worker_cert(self.intermediate, worker_id), f"worker-{worker_id}")


@dataclass(frozen=True)
class TrustRoot:
    """A root CA (allowed one level of intermediates below it) and its trust bundle file."""

    root: certs.Issued
    directory: Path

    @classmethod
    def create(cls, directory: Path, name: str = "dispatchd root CA") -> TrustRoot:
        trust = cls(certs.new_ca(name, path_length=1), directory)
        directory.mkdir(parents=True, exist_ok=True)
        trust.bundle.write_bytes(trust.root.cert_pem())
        return trust

    @property
    def bundle(self) -> Path:
        """The ca.crt every service and worker verifies against: the root, never an intermediate."""
        return self.directory / "trust-bundle.pem"

    def region(self, name: str) -> Region:
        intermediate = certs.new_ca(f"dispatchd intermediate {name}", parent=self.root, path_length=0)
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        return Region(name, intermediate, directory)
