"""The wire contract: lint, compatibility with the reference and the baseline, no drift."""

from __future__ import annotations

import filecmp
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = pathlib.Path(__file__).parent / "reference"


def _buf(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    bindir = pathlib.Path(sys.executable).parent
    buf = shutil.which("buf", path=str(bindir)) or shutil.which("buf")
    if buf is None:
        pytest.fail("buf is not installed; run `make venv` (buf-bin is a dev dependency)")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([buf, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_buf_lint_standard() -> None:
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_superset_of_reference_contract(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "reference.binpb"
    built = _buf("build", str(REFERENCE), "-o", str(image))
    assert built.returncode == 0, built.stderr
    config = {"version": "v2", "modules": [{"path": "proto"}], "breaking": {"use": ["WIRE_JSON"]}}
    result = _buf("breaking", ".", "--against", str(image), "--config", json.dumps(config))
    assert result.returncode == 0, "contract is no longer a superset of the reference:\n" + result.stdout


def test_not_breaking_against_committed_baseline() -> None:
    result = _buf("breaking", "--against", "proto/baseline.json")
    assert result.returncode == 0, "breaking change against proto/baseline.json:\n" + result.stdout


def test_breaking_check_catches_a_renumbered_field(tmp_path: pathlib.Path) -> None:
    """Guard the guard: a retyped field must fail the same check."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "proto", work / "proto")
    shutil.copy(ROOT / "buf.yaml", work / "buf.yaml")
    common = work / "proto" / "dispatchd" / "v1" / "common.proto"
    common.write_text(common.read_text().replace("int32 priority = 5;", "int64 priority = 5;"))
    result = _buf("breaking", "--against", str(ROOT / "proto" / "baseline.json"), cwd=work)
    assert result.returncode != 0
    assert "priority" in result.stdout


def test_generated_code_matches_protos(tmp_path: pathlib.Path) -> None:
    result = _buf("generate", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "gen" / "python" / "dispatchd" / "v1"
    committed = ROOT / "gen" / "python" / "dispatchd" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    _match, mismatch, errors = filecmp.cmpfiles(fresh, committed, generated, shallow=False)
    assert not mismatch and not errors, f"gen/python is stale ({mismatch + errors}); run `make proto`"
    stray = {p.name for p in committed.iterdir() if p.suffix in {".py", ".pyi"}} - set(generated) - {"__init__.py"}
    assert not stray, f"gen/python has files no proto produces: {sorted(stray)}"
