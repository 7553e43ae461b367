#!/usr/bin/env bash
# `make image`: build the Dockerfile, unchanged, with buildah (no Docker engine needed):
# vfs storage and chroot isolation work unprivileged-namespace-free, and RUN steps share the
# host network. The base is PYTHON_IMAGE; by default the stand-in of scripts/base-image.sh
# (made first if missing), since no registry is reachable here for `python:`.
#
#   scripts/image-build.sh                       # -> localhost/dispatchd:local
#   IMAGE=name:tag PYTHON_IMAGE=python:3.11.14-slim-bookworm scripts/image-build.sh
#
# Invariant: this machine's CA bundle and a pip configuration naming it are bind-mounted for
# the RUN steps only (`--volume`, as root's ~/.config/pip): pip in the build trusts what this
# machine trusts, and neither file is ever written to a layer
# (`make image-test` checks the built image for both). Layers are cached (`--layers`), so a
# second build with unchanged sources takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
IMAGE=${IMAGE:-localhost/dispatchd:local}
STANDIN=${BASE_IMAGE:-localhost/dispatchd-python-base:3.11-bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-$STANDIN}
# The bundle this machine's pip and TLS clients use (PIP_CERT, then SSL_CERT_FILE, then Debian's).
CA_BUNDLE=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
# Mounted over root's home, which the base has: a mount point the base lacked would be left
# behind in the layer as an empty file. A fixed path, so the layer cache recognises the steps.
BUILD_HOME=.dispatchd/image-build/root
IN_IMAGE_HOME=/root

if [[ "$PYTHON_IMAGE" == "$STANDIN" ]]; then
    BASE_IMAGE=$STANDIN BUILDAH=$BUILDAH bash scripts/base-image.sh
fi

rm -rf "$BUILD_HOME" && mkdir -p "$BUILD_HOME/.config/pip"
cp "$CA_BUNDLE" "$BUILD_HOME/.config/pip/ca-bundle.crt"
{
    echo "[global]"
    echo "cert = $IN_IMAGE_HOME/.config/pip/ca-bundle.crt"
    # A package index this machine is configured to use instead of PyPI, if any.
    if [[ -n "${PIP_INDEX_URL:-}" ]]; then echo "index-url = $PIP_INDEX_URL"; fi
} >"$BUILD_HOME/.config/pip/pip.conf"

started=$(date +%s)
$BUILDAH build --isolation chroot --layers --quiet \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
    --volume "$PWD/$BUILD_HOME:$IN_IMAGE_HOME:ro" \
    --tag "$IMAGE" --file Dockerfile . >/dev/null
echo "image: $IMAGE built in $(($(date +%s) - started)) s on $PYTHON_IMAGE"
