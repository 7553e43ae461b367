"""What the client distribution holds stays client code, and dispatchd.client's `__all__` is honest."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import dispatchd.client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = ROOT / "libs" / "client"
SERVER_PACKAGES = ("platform", "control_plane", "scheduler", "worker_gateway", "devtools")
SERVER_LIBRARIES = ("asyncpg", "sqlalchemy", "alembic", "redis", "pydantic_settings", "jwt")


def client_sources() -> list[Path]:
    """Every module the client distribution's project file gathers (its package-dir)."""
    project = tomllib.loads((CLIENT_PROJECT / "pyproject.toml").read_text())
    dirs = project["tool"]["setuptools"]["package-dir"].values()
    sources = [p for d in dirs for p in (CLIENT_PROJECT / d).resolve().rglob("*.py")]
    assert len(sources) > 30, "the package-dir table no longer points at the sources"
    return sources


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def test_client_modules_import_nothing_of_the_server() -> None:
    offenders = []
    for path in client_sources():
        for name in imported(path):
            parts = name.split(".")
            if (parts[0] == "dispatchd" and len(parts) > 1 and parts[1] in SERVER_PACKAGES) or (
                parts[0] in SERVER_LIBRARIES
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_all_lists_exactly_the_public_names() -> None:
    exported = set(dispatchd.client.__all__)
    public = {n for n in vars(dispatchd.client) if not n.startswith("_")}
    assert exported == public
    assert len(dispatchd.client.__all__) == len(exported)
    for name in exported:
        value = getattr(dispatchd.client, name)
        home = getattr(value, "__module__", "dispatchd.client")
        # Defined in a private module of the package (or shared from dispatchd.common), never in the server.
        assert home.startswith(("dispatchd.client", "dispatchd.common", "builtins")), (name, home)
    private = [p.stem for p in (CLIENT_PROJECT / "dispatchd" / "client").glob("*.py") if p.stem != "__init__"]
    assert private and all(stem.startswith("_") for stem in private)
    for stem in private:
        importlib.import_module(f"dispatchd.client.{stem}")
