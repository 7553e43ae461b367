"""How the image is built and run where no Docker engine is: the scripts, the make targets, CI.

`make image-test` itself builds and runs the image (minutes; the CI job `image` runs it, and
evidence/image/image-test.json records the last run); these tests keep its wiring honest.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.manifests import ROOT

SCRIPTS = ["scripts/base-image.sh", "scripts/image-build.sh", "scripts/container-entrypoint.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script: str) -> None:
    shell = "sh" if script.endswith("entrypoint.sh") else "bash"
    done = subprocess.run([shell, "-n", ROOT / script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_build_mounts_the_machines_pip_and_ca_only_over_roots_home() -> None:
    script = (ROOT / "scripts" / "image-build.sh").read_text()
    assert "--isolation chroot" in script and "--build-arg \"PYTHON_IMAGE=$PYTHON_IMAGE\"" in script
    volumes = re.findall(r"--volume \"([^\"]+)\"", script)
    # A mount point the base lacks (e.g. /etc/pip.conf) is left in the layer as an empty file.
    assert volumes == ["$PWD/$BUILD_HOME:$IN_IMAGE_HOME:ro"], volumes
    assert re.search(r"^IN_IMAGE_HOME=/root$", script, flags=re.M)


def test_make_targets_run_the_scripts() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image:\n\t.*bash scripts/image-build\.sh$", makefile, flags=re.M)
    assert re.search(r"^image-test: venv\n\t.*-m dispatchd\.devtools\.image\.smoke$", makefile, flags=re.M)


def test_ci_builds_and_runs_the_image() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = ci["jobs"]["image"]["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    for package in ("buildah", "debootstrap", "debian-archive-keyring", "postgresql", "redis-server"):
        assert re.search(rf"apt-get install .*\b{package}\b", runs), package
    assert "sudo make image-test" in runs.splitlines()
