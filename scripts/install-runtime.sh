#!/bin/sh
# Install both dispatchd distributions (the client one, libs/client, and the services, which
# depends on it) and their runtime dependencies, pinned by requirements.lock, into a new
# virtual environment. The Dockerfile's build stage runs exactly this, and so does
# tests/deploy/test_image.py (in a fresh venv, then it imports every entry point), so the
# image's install steps are tested by the fast suite too; `make image-test` builds the image.
#
#   scripts/install-runtime.sh VENV_DIR [SOURCE_DIR]
set -eu

venv=${1:?usage: install-runtime.sh VENV_DIR [SOURCE_DIR]}
src=${2:-.}
python=${PYTHON:-python3}

"$python" -m venv "$venv"
# Runtime only (no dev extras); the lock pins every transitive dependency as a constraint.
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    --constraint "$src/requirements.lock" "$src/libs/client" "$src"
# Nothing installs packages at run time: the final image carries no installer.
"$venv/bin/python" -m pip uninstall --yes --disable-pip-version-check pip
