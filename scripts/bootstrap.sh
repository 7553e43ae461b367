#!/usr/bin/env bash
# Idempotent developer bootstrap (run by `make venv`): .venv with both distributions installed
# editable (the client one, libs/client, and dispatchd[dev], the services, which depends on it),
# plus the redis-server and PostgreSQL binaries that `make up` and the tests start privately, and
# Chromium with its driver for the dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.stamp"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "bootstrap: creating $VENV"
    python3 -m venv "$VENV"
fi

# Reinstall only when the dependency inputs changed since the last successful install.
needs_install=0
[[ -f "$STAMP" ]] || needs_install=1
for input in pyproject.toml libs/client/pyproject.toml requirements.lock scripts/bootstrap.sh; do
    if [[ -f "$input" && "$input" -nt "$STAMP" ]]; then needs_install=1; fi
done
if (( needs_install )); then
    constraints=()
    if [[ -f requirements.lock ]]; then constraints=(-c requirements.lock); fi
    echo "bootstrap: installing dispatchd-client and dispatchd[dev] into $VENV ${constraints[*]}"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # A venv from before the split has a `dispatchd` that owns dispatchctl and dispatchd-worker;
    # replacing it after dispatchd-client is installed would delete those scripts.
    if "$VENV/bin/python" -m pip show -q dispatchd-client >/dev/null 2>&1; then :; else
        "$VENV/bin/python" -m pip uninstall -q -y dispatchd >/dev/null 2>&1 || true
    fi
    "$VENV/bin/python" -m pip install -q "${constraints[@]}" -e ./libs/client -e '.[dev]'
    touch "$STAMP"
else
    echo "bootstrap: $VENV is up to date"
fi

# System services: private instances are started from these binaries (never the system units).
apt_updated=0
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "bootstrap: $1 is missing; install it (e.g. apt-get install $1) and re-run" >&2
        return 1
    fi
    if (( ! apt_updated )); then
        echo "bootstrap: apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    echo "bootstrap: apt-get install $1"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

command -v redis-server >/dev/null || apt_install redis-server
if [[ -z "${PG_BIN:-}" ]] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    && ! command -v initdb >/dev/null; then
    apt_install postgresql
fi
# The dashboard's browser tests (tests/e2e/test_dashboard_browser.py) and `make screenshots` drive
# Debian's headless Chromium through its chromedriver; nothing downloads a browser of its own.
command -v chromium >/dev/null || apt_install chromium
command -v chromedriver >/dev/null || apt_install chromium-driver
echo "bootstrap: done"
