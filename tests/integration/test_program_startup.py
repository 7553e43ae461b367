"""Every program's first contact with an operator: `--help`, and a store that does not answer.

`--help` must answer at once without connecting anywhere: every address a program could use
(stores, gateway, control plane) points at a listener of this test, which must see no
connection. A service or migrate whose Postgres or Redis is a closed port must exit non-zero
within a bounded time with ONE line naming the store and its address (no password), and no
traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatchd.devtools.stores import free_port
from dispatchd.platform import startup
from tests.deploy.test_image import entry_points

BIN = Path(sys.executable).parent
# Generous for a loaded 2-core machine; the programs take about a second when idle.
HELP_SECONDS = 30.0
# startup.CONNECT_TIMEOUT bounds each store; a refused port fails long before it.
EXIT_SECONDS = startup.CONNECT_TIMEOUT + 20.0
SERVICES = ["dispatchd-control-plane", "dispatchd-scheduler", "dispatchd-worker-gateway"]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket whose accept queue tells whether anything connected."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def quiet_env(address: str, **extra: str) -> dict[str, str]:
    """This environment with every address a program might reach set to `address`."""
    host, port = address.split(":")
    return {
        **os.environ,
        "DATABASE_URL": f"postgresql://dispatchd:secret@{address}/dispatchd",
        "REDIS_URL": f"redis://:secret@{address}/0",
        "DISPATCHD_GATEWAY_TARGET": address,
        "DISPATCHD_CONTROL_PLANE_TARGET": address,
        "PGHOST": host,
        "PGPORT": port,
        **extra,
    }


def run(argv: list[str], env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")
    return done, time.monotonic() - started


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize("program", sorted(entry_points()))
def test_help_answers_without_connecting(program: str, listener: socket.socket) -> None:
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    done, took = run([str(BIN / program), "--help"], quiet_env(address), HELP_SECONDS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"usage: {program}"), done.stdout
    assert not connected(listener), f"{program} --help connected to {address}"
    assert took < HELP_SECONDS


def test_service_help_names_its_configuration() -> None:
    done, _ = run([str(BIN / "dispatchd-worker-gateway"), "--help"], dict(os.environ), HELP_SECONDS)
    for variable in ("DISPATCHD_GATEWAY_LISTEN", "DATABASE_URL", "REDIS_URL", "DISPATCHD_HEALTH_LISTEN"):
        assert variable in done.stdout


@pytest.mark.parametrize("program", SERVICES)
def test_service_without_a_command_line_is_refused_extra_arguments(program: str) -> None:
    done, _ = run([str(BIN / program), "--listen", "x"], dict(os.environ), HELP_SECONDS)
    assert done.returncode == 2
    assert "unrecognized arguments" in done.stderr


def assert_one_line_exit(done: subprocess.CompletedProcess[str], took: float, expected: str) -> None:
    assert done.returncode not in (0, None), done.stdout + done.stderr
    assert took < EXIT_SECONDS
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0], lines[0]
    assert "secret" not in done.stdout + done.stderr, "the password is never printed"
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("program", SERVICES)
def test_service_with_postgres_unreachable_says_so_in_one_line(program: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    done, took = run([str(BIN / program)], quiet_env(closed), EXIT_SECONDS + 5)
    assert_one_line_exit(done, took, f"cannot reach Postgres at postgresql://dispatchd@{closed}/dispatchd: ")


@pytest.mark.parametrize("program", SERVICES)
def test_service_with_redis_unreachable_says_so_in_one_line(program: str, database_url: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    env = quiet_env(closed, DATABASE_URL=database_url)
    done, took = run([str(BIN / program)], env, EXIT_SECONDS + 5)
    assert_one_line_exit(done, took, f"cannot reach Redis at redis://{closed}/0: ")


def test_migrate_with_postgres_unreachable_says_so_in_one_line() -> None:
    closed = f"127.0.0.1:{free_port()}"
    done, took = run([str(BIN / "dispatchd-migrate")], quiet_env(closed), EXIT_SECONDS + 5)
    assert_one_line_exit(done, took, f"dispatchd-migrate: cannot reach Postgres at postgresql://dispatchd@{closed}/")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db:5432/x", "postgresql://u@db:5432/x"),
        ("redis://:pw@cache:6379/0", "redis://cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("postgresql://u@db/x?sslmode=require", "postgresql://u@db/x?sslmode=require"),
    ],
)
def test_address_drops_only_the_password(url: str, shown: str) -> None:
    assert startup.address(url) == shown
