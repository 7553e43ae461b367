"""The repository's layout rules: every package ships in exactly one distribution, and
nothing outside `tests/` imports `tests` (the harness lives in dispatchd.devtools).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = (ROOT, ROOT / "libs" / "client")
SHIPPED_TREES = ("gen", "libs", "services")
NOT_TESTS = ("gen", "libs", "services", "perf", "scripts")


def declared_packages() -> dict[Path, list[str]]:
    """Package directory -> the distributions (project dirs) that list it."""
    found: dict[Path, list[str]] = {}
    for project in PROJECTS:
        setuptools = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]
        roots = setuptools["package-dir"]
        for package in setuptools["packages"]:
            # The longest package-dir prefix names the directory, as setuptools resolves it.
            prefix = max((p for p in roots if package == p or package.startswith(p + ".")), key=len)
            rest = package[len(prefix) :].lstrip(".").replace(".", "/")
            directory = (project / roots[prefix] / rest).resolve()
            found.setdefault(directory, []).append(str(project.relative_to(ROOT)) or ".")
    return found


def test_every_package_ships_in_exactly_one_distribution() -> None:
    declared = declared_packages()
    on_disk = {
        init.parent.resolve()
        for tree in SHIPPED_TREES
        for init in (ROOT / tree).rglob("__init__.py")
        if ".venv" not in init.parts
    }
    assert sorted(map(str, on_disk - declared.keys())) == [], "packages no distribution ships"
    assert sorted(str(d) for d in declared if not (d / "__init__.py").is_file()) == [], "declared, not on disk"
    assert {str(d): p for d, p in declared.items() if len(p) > 1} == {}, "shipped twice"


def test_nothing_outside_tests_imports_tests() -> None:
    offenders = []
    for tree in NOT_TESTS:
        for path in (ROOT / tree).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []
