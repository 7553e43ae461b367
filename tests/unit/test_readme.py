"""The README stays true: every setting documented, every make target it names exists."""

from __future__ import annotations

import pathlib
import re

from dispatchd.platform.config import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for name, field in Settings.model_fields.items():
        env = field.validation_alias.choices[0] if field.validation_alias else f"DISPATCHD_{name.upper()}"  # type: ignore[union-attr]
        assert f"| `{env}`" in README, f"README configuration table lacks {env}"


def test_every_make_target_named_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    for target in set(re.findall(r"`make ([a-z-]+)`", README)):
        assert target in targets, f"README names `make {target}` but the Makefile has no such target"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
