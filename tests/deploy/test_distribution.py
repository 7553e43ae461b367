"""The client distribution (libs/client) installs alone: a fresh venv gets the client, the
worker SDK, dispatchctl and the stubs, and no database driver or server code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.manifests import ROOT

SERVER_ONLY = ("asyncpg", "sqlalchemy", "alembic", "redis", "dispatchd")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with only the client distribution, from a wheel built out of this checkout."""
    work = tmp_path_factory.mktemp("client-dist")
    wheels = work / "wheels"
    # Built from a copy: setuptools leaves a build/ directory next to the project file.
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for source in ("gen", "libs"):
        shutil.copytree(ROOT / source, work / "src" / source, ignore=junk)

    def run(*argv: str | Path) -> None:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        wheels,
        work / "src" / "libs" / "client",
    )
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    (wheel,) = wheels.glob("dispatchd_client-*.whl")
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--constraint", ROOT / "requirements.lock", wheel)
    yield venv


def test_the_client_packages_import_and_the_scripts_run(client_venv: Path) -> None:
    python = client_venv / "bin" / "python"
    modules = "dispatchd.client, dispatchd.sdk.worker, dispatchd.cli.main, dispatchd.v1.job_service_pb2_grpc"
    done = subprocess.run([python, "-c", f"import {modules}"], capture_output=True, text=True, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    for script, usage in (("dispatchctl", "usage: dispatchctl"), ("dispatchd-worker", "usage: dispatchd-worker")):
        shown = subprocess.run(
            [client_venv / "bin" / script, "--help"], capture_output=True, text=True, cwd="/", check=False
        )
        assert shown.returncode == 0 and usage in shown.stdout, shown.stderr


def test_no_database_driver_or_server_package_is_installed(client_venv: Path) -> None:
    listing = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))"
    done = subprocess.run(
        [client_venv / "bin" / "python", "-c", listing], capture_output=True, text=True, cwd="/", check=True
    )
    installed = set(done.stdout.split())
    assert "dispatchd-client" in installed
    assert not installed & set(SERVER_ONLY), installed & set(SERVER_ONLY)
    for package in ("platform", "control_plane", "scheduler", "worker_gateway", "devtools"):
        probe = subprocess.run(
            [client_venv / "bin" / "python", "-c", f"import dispatchd.{package}"],
            capture_output=True,
            cwd="/",
            check=False,
        )
        assert probe.returncode != 0, f"dispatchd.{package} is importable from the client distribution"
