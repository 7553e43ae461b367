#!/usr/bin/env bash
# A stand-in for the `python:3.11-slim-bookworm` base image, made from Debian packages where no
# registry is reachable: a bookworm minbase (debootstrap, from this machine's Debian mirror) with
# Debian's python3 and ca-certificates, and `python3 -m venv /usr/local`, so `python`, `python3`
# and an uninstallable pip sit in /usr/local/bin where the official image has them. Committed
# to buildah's local storage; `make image` passes it to the Dockerfile as PYTHON_IMAGE.
#
#   scripts/base-image.sh             # build it unless it is there already (the cache)
#   REBUILD=1 scripts/base-image.sh   # build it again
#
# Invariant: nothing of this machine's trust or pip configuration enters the base (only Debian's
# CA bundle); the build mounts those for its own RUN steps (scripts/image-build.sh).
set -euo pipefail

BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
BASE_IMAGE=${BASE_IMAGE:-localhost/dispatchd-python-base:3.11-bookworm}

for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { echo "base-image: $tool is required (apt-get install -y $tool)" >&2; exit 1; }
done

if [[ -z "${REBUILD:-}" ]] && $BUILDAH inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base-image: $BASE_IMAGE is built already (REBUILD=1 to build it again)"
    exit 0
fi

# The mirror apt uses here (deb822 or one-line sources), unless DEBIAN_MIRROR says otherwise.
mirror=${DEBIAN_MIRROR:-$(
    (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
        | awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ {print $2; exit}
               $1 == "deb" && $2 ~ /\/debian\/?$/ && $3 == "bookworm" {print $2; exit}' || true
)}
mirror=${mirror:-http://deb.debian.org/debian}

started=$(date +%s)
ctr=$($BUILDAH from scratch)
trap '$BUILDAH rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$($BUILDAH mount "$ctr")
echo "base-image: debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" \
    >"${TMPDIR:-/tmp}/dispatchd-debootstrap.log" 2>&1 \
    || { tail -20 "${TMPDIR:-/tmp}/dispatchd-debootstrap.log" >&2; exit 1; }
$BUILDAH run --isolation chroot "$ctr" -- python3 -m venv /usr/local
# What the official slim image leaves out too: package lists and downloaded archives.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
$BUILDAH config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label org.opencontainers.image.description="stand-in for python:3.11-slim-bookworm (Debian python3 in a venv at /usr/local)" \
    "$ctr"
$BUILDAH unmount "$ctr" >/dev/null
$BUILDAH commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
trap - EXIT
echo "base-image: $BASE_IMAGE built in $(($(date +%s) - started)) s"
