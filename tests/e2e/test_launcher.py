"""`make up` works: the launcher starts everything, runs a job through it and stops cleanly.

Every address and store port is a free one (tests.support.launcher), so a developer's running
stack is never touched.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dispatchd.devtools.stores import port_free
from tests.support.launcher import UP, launcher_env, run_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

def listen_addresses(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if k.startswith("DISPATCHD_") and k.endswith("_LISTEN")]


def test_check_with_private_stores(tmp_path: Path) -> None:
    env = launcher_env()
    result = run_up(env, "--check", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting a private server" in result.stdout
    assert "check passed" in result.stdout
    assert (tmp_path / "data" / "logs" / "scheduler-2.log").exists()
    # Everything, the private stores included, is stopped again.
    ports = [f"127.0.0.1:{env[k]}" for k in ("DISPATCHD_LOCAL_PG_PORT", "DISPATCHD_LOCAL_REDIS_PORT")]
    assert all(port_free(a) for a in [*listen_addresses(env), *ports])


def test_check_uses_reachable_stores_from_the_environment(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = launcher_env(DATABASE_URL=database_url, REDIS_URL=redis_url)
    result = run_up(env, "--check", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "postgres: using DATABASE_URL" in result.stdout
    assert "redis: using REDIS_URL" in result.stdout
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, database_url: str, redis_url: str) -> None:
    env = launcher_env(DATABASE_URL=database_url, REDIS_URL=redis_url)
    busy = env["DISPATCHD_GATEWAY_LISTEN"]
    host, _, port = busy.rpartition(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        result = run_up(env, "--check", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert f"worker-gateway: {busy} is already in use" in result.stdout


def test_foreground_run_stops_everything_on_sigterm(tmp_path: Path, database_url: str, redis_url: str) -> None:
    env = launcher_env(DATABASE_URL=database_url, REDIS_URL=redis_url)
    out = tmp_path / "up.out"
    with open(out, "wb") as sink:
        up = subprocess.Popen(
            [*UP, "--data-dir", str(tmp_path / "data"), "--workers", "2"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while "dispatchd is up" not in out.read_text():
                assert up.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            assert "2 worker(s) connected" in out.read_text()
            up.send_signal(signal.SIGTERM)
            assert up.wait(60) == 0, out.read_text()
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    print(out.read_text())
    assert all(port_free(a) for a in listen_addresses(env))
    assert "stopping control-plane" in out.read_text()
