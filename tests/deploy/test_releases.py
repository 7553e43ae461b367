"""Releases, GitOps style: the release workflow tests before it publishes, signs what it
pushed (by digest), and moves the overlays by pull request, never by a push to main; the
overlays that run releases pin a digest. Each rule is shown to catch a broken copy, and the
workflow's own overlay edit is run here on a copy of deploy/.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_policies import containers, workloads
from tests.support.manifests import (
    DEPLOY,
    RELEASED,
    ROOT,
    WITH_EXTERNAL_SECRETS,
    Obj,
    Render,
    assert_catches,
    kustomize,
)

RELEASE = ROOT / ".github" / "workflows" / "release.yml"
OUR_IMAGE = "ghcr.io/dispatchd/dispatchd"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
Workflow = dict[str, Any]


def release() -> Workflow:
    spec: Workflow = yaml.safe_load(RELEASE.read_text())
    return spec


def _needs(workflow: Workflow, job: str) -> set[str]:
    """Every job that must finish before job starts."""
    direct = workflow["jobs"][job].get("needs", [])
    direct = [direct] if isinstance(direct, str) else direct
    return set(direct).union(*(_needs(workflow, d) for d in direct))


def _runs(job: Obj) -> list[str]:
    return [step.get("run", "") for step in job.get("steps", [])]


def release_is_ordered(workflow: Workflow) -> list[str]:
    found = []
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    if set(triggers) != {"push"} or "branches" in triggers["push"] or not triggers["push"].get("tags"):
        found.append("the release runs on version tags only")
    tests = {name for name, job in workflow["jobs"].items() if job.get("uses") == "./.github/workflows/ci.yml"}
    if not tests:
        found.append("no job runs the CI workflow")
    for name, job in workflow["jobs"].items():
        writes = {k for k, v in job.get("permissions", {}).items() if v == "write"}
        if writes and not tests <= _needs(workflow, name):
            found.append(f"job {name} may write {sorted(writes)} before the tests pass")
    image = workflow["jobs"].get("image", {})
    steps = image.get("steps", [])
    pushed = [i for i, s in enumerate(steps) if s.get("with", {}).get("push") is True]
    signed = [i for i, run in enumerate(_runs(image)) if re.search(r"cosign sign .*@\$\{DIGEST\}", run)]
    if not pushed or not signed or min(signed) < max(pushed):
        found.append("the image is not signed by digest after it is pushed")
    if image.get("permissions", {}).get("id-token") != "write":
        found.append("keyless signing needs id-token: write on the image job")
    if not any(s.get("with", {}).get("sbom") is True for s in steps):
        found.append("no SBOM attestation is attached")
    if "steps.build.outputs.digest" not in str(image.get("outputs", {}).get("digest")):
        found.append("the pushed digest is not recorded as the job's output")
    for name, job in workflow["jobs"].items():
        for run in _runs(job):
            pushes = [line.strip() for line in run.splitlines() if line.strip().startswith("git push")]
            if any(line != 'git push origin "$branch"' for line in pushes):
                found.append(f"job {name} pushes something other than its own branch: {pushes}")
            if pushes and "gh pr create --base main" not in run:
                found.append(f"job {name} pushes a branch but opens no pull request")
    promote = workflow["jobs"].get("promote", {})
    if "image" not in _needs(workflow, "promote") or "digest: )" not in "".join(_runs(promote)):
        found.append("no pull request moves the overlays to the released digest")
    return found


def digests_pinned(render: Render) -> list[str]:
    """Every overlay but dev runs our image by digest; dev may run a tag."""
    if render.name == "dev":
        return []
    return [
        f"{w['kind']}/{w['metadata']['name']}: {c['image']} is not pinned by digest"
        for w in workloads(render)
        for c in containers(w)
        if c["image"].startswith(OUR_IMAGE) and not DIGEST.search(c["image"])
    ]


def test_the_release_is_ordered() -> None:
    assert release_is_ordered(release()) == []


@pytest.mark.parametrize("overlay", [*RELEASED, WITH_EXTERNAL_SECRETS])
def test_released_overlays_pin_digests(renders: dict[str, Render], overlay: str) -> None:
    assert digests_pinned(renders[overlay]) == []


def test_dev_is_not_held_to_digests(renders: dict[str, Render]) -> None:
    assert not DIGEST.search(next(containers(w) for w in workloads(renders["dev"]))[0]["image"])


def _step(workflow: Workflow, job: str, needle: str) -> Obj:
    step: Obj = next(s for s in workflow["jobs"][job]["steps"] if needle in str(s))
    return step


def _take(workflow: Workflow, job: str, needle: str) -> Obj:
    step = _step(workflow, job, needle)
    workflow["jobs"][job]["steps"].remove(step)
    return step


RELEASE_MUTATIONS: list[Callable[[Workflow], Any]] = [
    lambda w: w["jobs"]["image"].pop("needs"),
    lambda w: w["jobs"]["image"]["steps"].append(_take(w, "image", "build-push-action")),  # push after signing
    lambda w: w["jobs"]["image"]["permissions"].pop("id-token"),
    lambda w: _step(w, "image", "build-push-action")["with"].pop("sbom"),
    lambda w: _step(w, "promote", "gh pr create").update(run="git push origin main"),
    lambda w: w["jobs"]["promote"].pop("needs"),
    lambda w: (w.get("on") or w[True])["push"].update(branches=["main"]),
]


@pytest.mark.parametrize("mutate", RELEASE_MUTATIONS)
def test_the_release_rule_catches_violations(mutate: Callable[[Workflow], Any]) -> None:
    broken = copy.deepcopy(release())
    mutate(broken)
    assert release_is_ordered(broken), "release_is_ordered missed the violation"


def test_the_digest_rule_catches_a_tag(renders: dict[str, Render]) -> None:
    def by_tag(objects: list[Obj]) -> None:
        for obj in objects:
            if obj["kind"] == "Deployment":
                container = obj["spec"]["template"]["spec"]["containers"][0]
                container["image"] = container["image"].partition("@")[0]
                return

    assert_catches(renders["prod-region-a"], digests_pinned, by_tag)


# --------------------------------------------------------------------------- the overlay edit, run


@pytest.mark.parametrize("environment", ["prod", "dev"])
def test_the_promotion_moves_the_overlays(tmp_path: Path, environment: str) -> None:
    workflow = release()
    (entry,) = [
        e for e in workflow["jobs"]["promote"]["strategy"]["matrix"]["include"] if e["environment"] == environment
    ]
    script = _step(workflow, "promote", "gh pr create")["run"]
    (edit,) = [line.strip() for line in script.splitlines() if line.strip().startswith("sed ")]
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    digest = "sha256:" + "ab" * 32
    env = {"VERSION": "9.8.7", "DIGEST": digest, "OVERLAYS": entry["overlays"], "PATH": "/usr/bin:/bin"}
    assert subprocess.run(["bash", "-c", edit], cwd=tmp_path, env=env, check=False).returncode == 0

    moved = {"prod": [*RELEASED], "dev": ["dev"]}[environment]
    for overlay in moved:
        images = {
            c["image"]
            for w in workloads(Render(overlay, kustomize(tmp_path / "deploy" / "overlays" / overlay)))
            for c in containers(w)
            if c["image"].startswith(OUR_IMAGE)
        }
        pinned = f"@{digest}" if overlay in RELEASED else ""
        assert images == {f"{OUR_IMAGE}:9.8.7{pinned}"}, overlay
