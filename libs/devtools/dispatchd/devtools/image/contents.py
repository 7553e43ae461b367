"""What must not be in the built image: the build's pip configuration and CA bundle, an installer.

The build mounts this machine's CA bundle and a pip configuration naming it (scripts/image-build.sh);
a mount point the base lacked, or a layer cached from a build that leaked them, would ship them.
Invariant: `leaks()` is empty for a good image, and names each offending path otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
BUNDLE = "etc/ssl/certs/ca-certificates.crt"
# Where pip would read a configuration from, in the image's venvs and for any user.
PIP_CONFIG = ("etc/pip.conf", "etc/xdg/pip/pip.conf", "root/.config/pip", "root/.pip", "usr/local/pip.conf")
INSTALLERS = ("opt/dispatchd/bin/pip", "usr/local/bin/pip")
# Certificates live in few places; reading every file of the image would take minutes on vfs.
CERT_SUFFIXES = (".crt", ".pem", ".cer")


def certificates(path: Path) -> set[bytes]:
    try:
        return {" ".join(block.decode().split()).encode() for block in PEM.findall(path.read_bytes())}
    except (OSError, UnicodeDecodeError):
        return set()


def certificate_files(root: Path) -> Iterator[Path]:
    for top in ("etc", "usr", "opt"):
        for path in (root / top).rglob("*"):
            if path.suffix in CERT_SUFFIXES and path.is_file() and not path.is_symlink():
                yield path


def leaks(image_root: Path, base_root: Path, build_bundle: Path) -> list[str]:
    """Paths in the image holding what the build borrowed from this machine, or an installer."""
    found = [p for p in (*PIP_CONFIG, *INSTALLERS) if (image_root / p).exists() or (image_root / p).is_symlink()]
    # The machine's own additions: in the bundle the build trusted, not in the base's.
    added = certificates(build_bundle) - certificates(base_root / BUNDLE)
    if added:
        found += [str(p.relative_to(image_root)) for p in certificate_files(image_root) if certificates(p) & added]
    return found
