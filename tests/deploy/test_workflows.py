"""The GitHub workflows: valid against the workflow schema, actions pinned by commit, least
privilege (the release workflow's own rules: test_releases.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.manifests import DEPLOY, ROOT, Render

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v?\d+(\.\d+)*$")


def test_the_expected_workflows_exist() -> None:
    assert {p.stem for p in WORKFLOWS} >= {"ci", "security", "release", "kind-e2e"}


def test_workflows_match_the_github_schema() -> None:
    tool = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *WORKFLOWS], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit(workflow: Path) -> None:
    uses = [line.split("uses:", 1)[1].strip() for line in workflow.read_text().splitlines() if "uses:" in line]
    assert uses
    for use in uses:
        assert use.startswith("./") or PINNED.match(use), (
            f"{workflow.name}: {use!r} is not pinned by SHA with a version"
        )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_least_privilege_by_default(workflow: Path) -> None:
    spec = yaml.safe_load(workflow.read_text())
    assert spec.get("permissions") == {"contents": "read"}, f"{workflow.name}: top-level permissions"
    for job in spec["jobs"].values():
        for service in job.get("services", {}).values():
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{workflow.name}: service image {image}"


def test_ci_runs_the_deploy_tests_strictly() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step.get("run", "") for step in ci["jobs"]["test"]["steps"]]
    assert "make test" in steps
    assert ci["jobs"]["test"]["env"]["DISPATCHD_REQUIRE_DEPLOY_TOOLS"] == "1"


def test_kind_up_builds_the_tag_the_dev_overlay_runs(renders: dict[str, Render]) -> None:
    script = (ROOT / "scripts" / "kind-up.sh").read_text()
    assert "deploy/overlays/dev" in script and "kind load docker-image" in script
    tag = re.search(r"^\s*newTag:\s*(\S+)", (DEPLOY / "overlays" / "dev" / "kustomization.yaml").read_text(), re.M)
    assert tag
    images = {
        c["image"] for d in renders["dev"].kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert f"ghcr.io/dispatchd/dispatchd:{tag.group(1)}" in images


def test_kind_runs_the_backup_and_failover_drills_in_kubernetes_mode() -> None:
    kind = yaml.safe_load((ROOT / ".github" / "workflows" / "kind-e2e.yml").read_text())
    triggers = kind.get("on", kind.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "perf/**" in triggers["pull_request"]["paths"]
    runs = [step.get("run", "") for step in kind["jobs"]["kind"]["steps"]]
    up = runs.index("scripts/kind-up.sh")
    for module in ("perf.drill_backup", "perf.drills"):
        (index,) = [i for i, run in enumerate(runs) if f"-m {module} --platform kubernetes" in run]
        assert index > up, f"{module} runs before the cluster is up"
