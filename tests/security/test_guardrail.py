"""APP_ENV=production: a service refuses to start with security off or a development secret, and says which.

An APP_ENV that is neither `development` nor `production` (a typo) refuses to start too.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from dispatchd.devtools.stack import python_module_argv
from dispatchd.devtools.stores import free_port
from tests.support.security import Credentials

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVICES = ["dispatchd.control_plane.main", "dispatchd.worker_gateway.main", "dispatchd.scheduler.main"]
# Unreachable stores: the guardrail must fire before anything connects.
STORES = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}


def _start(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_") and k != "APP_ENV"}
    listen = {
        "DISPATCHD_CONTROL_PLANE_LISTEN": f"127.0.0.1:{free_port()}",
        "DISPATCHD_GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
        "DISPATCHD_SCHEDULER_LISTEN": f"127.0.0.1:{free_port()}",
    }
    return subprocess.run(
        python_module_argv(module),
        env={**clean, **STORES, **listen, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", SERVICES)
def test_production_refuses_insecure_defaults(module: str) -> None:
    result = _start(module, {"APP_ENV": "production"})
    assert result.returncode != 0
    message = result.stderr
    assert "refusing to start with APP_ENV=production" in message
    assert "authentication is off (set DISPATCHD_AUTH_ENABLED=true)" in message
    assert "TLS is off" in message
    assert "client certificates are not required" in message
    assert "development secret" not in message


def test_production_names_each_problem_alone(creds: Credentials) -> None:
    secure = creds.server_env()
    cases = {
        "authentication is off": {**secure, "DISPATCHD_AUTH_ENABLED": "false"},
        "TLS is off": {**secure, "DISPATCHD_TLS_CERT_FILE": "", "DISPATCHD_TLS_KEY_FILE": "",
                       "DISPATCHD_TLS_REQUIRE_CLIENT_CERT": "false", "DISPATCHD_TLS_CLIENT_CA_FILE": ""},
        "client certificates are not required": {**secure, "DISPATCHD_TLS_REQUIRE_CLIENT_CERT": "false"},
        "the audit log is off (set DISPATCHD_AUDIT_LEVEL": {**secure, "DISPATCHD_AUDIT_LEVEL": "off"},
        "a development secret is configured (unset DISPATCHD_JWT_HS256_SECRET)": {
            **secure,
            "DISPATCHD_JWT_HS256_SECRET": "x" * 40,
            "DISPATCHD_JWT_ALGORITHMS": "ES256,HS256",
        },
    }
    for problem, env in cases.items():
        result = _start("dispatchd.control_plane.main", env)
        assert result.returncode != 0, problem
        assert problem in result.stderr, (problem, result.stderr[-2000:])
        assert "refusing to start with APP_ENV=production" in result.stderr


def test_invalid_security_settings_fail_fast_outside_production(creds: Credentials) -> None:
    cases = {
        "need public keys": {"DISPATCHD_AUTH_ENABLED": "true"},
        "not supported": {"DISPATCHD_AUTH_ENABLED": "true", "DISPATCHD_JWT_ALGORITHMS": "none"},
        "HS256 needs a secret of at least 32 bytes": {
            "DISPATCHD_AUTH_ENABLED": "true",
            "DISPATCHD_JWT_ALGORITHMS": "HS256",
            "DISPATCHD_JWT_HS256_SECRET": "short",
        },
        "TLS needs both": {"DISPATCHD_TLS_CERT_FILE": str(creds.pki.server[0])},
        "needs DISPATCHD_TLS_CLIENT_CA_FILE": {
            "DISPATCHD_TLS_CERT_FILE": str(creds.pki.server[0]),
            "DISPATCHD_TLS_KEY_FILE": str(creds.pki.server[1]),
            "DISPATCHD_TLS_REQUIRE_CLIENT_CERT": "true",
        },
        "not a PEM public key": {
            "DISPATCHD_AUTH_ENABLED": "true",
            "DISPATCHD_JWT_PUBLIC_KEY_FILES": str(creds.pki.server[1]),
        },
    }
    for words, env in cases.items():
        result = _start("dispatchd.control_plane.main", env)
        assert result.returncode != 0, words
        assert "invalid security settings" in result.stderr, (words, result.stderr[-2000:])
        assert words in result.stderr, (words, result.stderr[-2000:])


@pytest.mark.parametrize("value", ["prod", "Production ", "staging", ""])
def test_an_unknown_app_env_refuses_to_start(value: str) -> None:
    result = _start("dispatchd.worker_gateway.main", {"APP_ENV": value})
    if value.strip().lower() == "production":
        assert "refusing to start with APP_ENV=production" in result.stderr  # known, just unsafe here
    else:
        assert f"APP_ENV={value!r} is not a known environment" in result.stderr, result.stderr[-2000:]
        assert "use one of: development, production" in result.stderr
    assert result.returncode != 0
