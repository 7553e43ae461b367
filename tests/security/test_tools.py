"""Developer tooling: certificates and tokens from the command line; dispatchctl, the worker and
`make up` with auth and mTLS on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from dispatchd.cli.main import main as dispatchctl
from dispatchd.devtools.stack import ServiceProcess, python_module_argv
from dispatchd.platform.security.keys import KeySet
from dispatchd.platform.security.tokens import TokenVerifier
from tests.support.launcher import launcher_env, run_up
from tests.support.security import AUDIENCE, ISSUER, Credentials, SecureStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_certs_and_tokens_commands(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = _run("-m", "dispatchd.devtools.certs", "--out", str(out), "--client", "ops", "--worker", "w-1")
    assert result.returncode == 0, result.stderr
    worker = x509.load_pem_x509_certificate((out / "workers" / "w-1.pem").read_bytes())
    uris = worker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://dispatchd.dev/worker/w-1"]
    assert (out / "ca.pem").exists() and (out / "server.key").stat().st_mode & 0o077 == 0

    keys = tmp_path / "jwt"
    keygen = ["-m", "dispatchd.devtools.tokens", "keygen", "--out", str(keys)]
    assert _run(*keygen, "--kid", "k1").returncode == 0
    assert _run(*keygen, "--kid", "k2", "--alg", "RS256").returncode == 0
    assert [k["kid"] for k in json.loads((keys / "jwks.json").read_text())["keys"]] == ["k1", "k2"]
    minted = _run(
        "-m", "dispatchd.devtools.tokens", "mint", "--key", str(keys / "k2.key"),
        "--sub", "alice", "--role", "submitter", "--role", "viewer", "--iss", ISSUER, "--aud", AUDIENCE, "--ttl", "5m",
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256", "ES256"], keys=KeySet(jwks_file=keys / "jwks.json")
    )
    principal = verifier.verify(minted.stdout.strip())
    assert principal.subject == "alice" and principal.roles == {"submitter", "viewer"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_dispatchctl_with_token_and_certificates(
    secure_stack: SecureStack, creds: Credentials, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = creds.pki.client("alice")
    token_file = _write(tmp_path / "alice.jwt", creds.token("alice", "submitter") + "\n")
    tls = ["--ca", str(creds.pki.ca), "--cert", str(cert), "--key", str(key)]
    base = ["--target", secure_stack.control_plane, "-o", "json"]

    assert dispatchctl([*base, *tls, "--token-file", str(token_file), "submit", "sec.cli", "--payload", "x"]) == 0
    job = json.loads(capsys.readouterr().out)["job"]
    assert dispatchctl([*base, *tls, "--token-file", str(token_file), "get", job["job_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job["job_id"]
    # Options may follow the command too.
    assert dispatchctl([*base, "list", *tls, "--token", creds.token("alice", "submitter")]) == 0
    assert [j["job_id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [job["job_id"]]

    # A submitter may not cancel: one line on stderr, exit 1.
    assert dispatchctl([*base, *tls, "--token-file", str(token_file), "cancel", job["job_id"]]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    # No token at all.
    assert dispatchctl([*base, *tls, "get", job["job_id"]]) == 1
    assert "UNAUTHENTICATED: missing credentials" in capsys.readouterr().err
    # No client certificate: the TLS handshake fails.
    assert dispatchctl([*base, "--ca", str(creds.pki.ca), "--token-file", str(token_file), "get", job["job_id"]]) == 1
    assert "cannot reach the control plane" in capsys.readouterr().err
    # Inconsistent options are a usage error.
    assert dispatchctl([*base, "--cert", str(cert), "list"]) == 2
    assert "needs its key" in capsys.readouterr().err

    # The same through the environment.
    monkeypatch.setenv("DISPATCHD_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("DISPATCHD_CA", str(creds.pki.ca))
    monkeypatch.setenv("DISPATCHD_CERT", str(cert))
    monkeypatch.setenv("DISPATCHD_KEY", str(key))
    assert dispatchctl([*base, "get", job["job_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job["job_id"]


def test_a_secured_worker_runs_jobs(
    secure_stack: SecureStack, creds: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    # The stack hands the worker its token, CA and certificate for worker id "worker-b".
    worker = secure_stack.add_worker("worker-b", "--builtins", "--heartbeat-seconds", "1")
    try:
        admin_cert, admin_key = creds.pki.client("admin-cli")
        ctl = [
            "--target", secure_stack.control_plane, "-o", "json", "--token", creds.token("root", "operator"),
            "--ca", str(creds.pki.ca), "--cert", str(admin_cert), "--key", str(admin_key),
        ]  # fmt: skip
        code = dispatchctl([*ctl, "submit", "builtin.echo", "--payload", "over mTLS", "--wait", "--wait-timeout", "30"])
        reply = json.loads(capsys.readouterr().out)
        assert code == 0, reply
        assert reply["job"]["status"] == "JOB_STATUS_SUCCEEDED"
    finally:
        worker.terminate()


def test_a_worker_whose_identity_is_refused_exits(
    secure_stack: SecureStack, creds: Credentials, tmp_path: Path, spawn_service: Callable[..., ServiceProcess]
) -> None:
    cert, key = creds.pki.worker("worker-b")
    token_file = _write(tmp_path / "wrong.jwt", creds.token("worker-a", "worker"))
    argv = [
        *python_module_argv("dispatchd.sdk.cli"), "--builtins", "--target", secure_stack.gateway,
        "--worker-id", "worker-a", "--token-file", str(token_file),
        "--ca", str(creds.pki.ca), "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip
    worker = spawn_service("refused-worker", argv, {})
    assert worker.wait(timeout=30) == 1
    assert "PERMISSION_DENIED" in worker.log_tail()
    assert "certificate does not name worker 'worker-a'" in worker.log_tail()


def test_make_up_secure_check(tmp_path: Path) -> None:
    env = launcher_env(DISPATCHD_SECURE="1", APP_ENV="production")
    result = run_up(env, "--check", "--data-dir", str(tmp_path / "up"), timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "secure mode: auth, TLS 1.3 and client certificates on" in result.stdout
    assert "check passed" in result.stdout
    audit = (tmp_path / "up" / "logs" / "control-plane.log").read_text()
    assert '"subject": "developer"' in audit and '"client_cert": "spiffe://dispatchd.dev/client/dispatchctl"' in audit
    assert (tmp_path / "up" / "secure" / "env.sh").read_text().count("export DISPATCHD_") == 4
