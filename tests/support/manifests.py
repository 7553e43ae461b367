"""Rendering the Kubernetes manifests in deploy/ with `kubectl kustomize`, for tests/deploy.

kubectl (with its built-in kustomize) is the one tool here that does not come from
requirements.lock. Without it these tests are skipped, unless DISPATCHD_REQUIRE_DEPLOY_TOOLS
is set (GitHub CI sets it), when its absence fails them.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "staging", "prod", "prod-region-a", "prod-region-b", "prod-region-a-cnpg", "prod-region-b-cnpg")
PROD_REGIONS = ("prod-region-a", "prod-region-b")
# Overlays that run the release production runs, pinned by digest (the release pull request
# moves them); dev runs a tag.
RELEASED = ("staging", "prod", *PROD_REGIONS, "prod-region-a-cnpg", "prod-region-b-cnpg")
# The optional ExternalSecrets component on top of region A, its store named by a patch as
# the component's header shows (rendered from a temporary overlay, external_secrets_overlay).
WITH_EXTERNAL_SECRETS = "prod-region-a+external-secrets"

Obj = dict[str, Any]


@dataclass
class Render:
    name: str
    objects: list[Obj]
    by_kind: dict[str, list[Obj]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            self.by_kind.setdefault(obj["kind"], []).append(obj)

    def kind(self, kind: str) -> list[Obj]:
        return self.by_kind.get(kind, [])

    def one(self, kind: str, name_prefix: str) -> Obj:
        found = [o for o in self.kind(kind) if o["metadata"]["name"].startswith(name_prefix)]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name_prefix}*, found {len(found)}"
        return found[0]

    @property
    def config(self) -> dict[str, str]:
        """The data of the shared dispatchd-config ConfigMap."""
        data: dict[str, str] = self.one("ConfigMap", "dispatchd-config")["data"]
        return data


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl (with kustomize) is not installed"
        if os.environ.get("DISPATCHD_REQUIRE_DEPLOY_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def kustomize(path: Path) -> list[Obj]:
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def broken_copy(render: Render, mutate: Callable[[list[Obj]], Any]) -> Render:
    """A deep copy of render with mutate applied to its objects, for showing a rule catches it."""
    objects = copy.deepcopy(render.objects)
    mutate(objects)
    return Render(f"{render.name}-broken", objects)


def assert_catches(render: Render, rule: Callable[[Render], list[str]], mutate: Callable[[list[Obj]], Any]) -> None:
    """rule passes render and fails a copy broken by mutate: the rule catches what it is for."""
    assert rule(render) == [], f"{rule.__name__} fails {render.name} itself"
    assert rule(broken_copy(render, mutate)), f"{rule.__name__} missed the violation"


def external_secrets_overlay(where: Path, store: str) -> Path:
    """An overlay of prod-region-a with components/external-secrets, reading ClusterSecretStore store."""
    where.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:  # kustomize refuses absolute resource paths
        return os.path.relpath(path, where)

    (where / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "dispatchd",
                "resources": [relative(DEPLOY / "overlays" / "prod-region-a")],
                "components": [relative(DEPLOY / "components" / "external-secrets")],
                "patches": [
                    {
                        "target": {"group": "external-secrets.io", "kind": "ExternalSecret"},
                        "patch": yaml.safe_dump(
                            [{"op": "replace", "path": "/spec/secretStoreRef/name", "value": store}]
                        ),
                    }
                ],
            }
        )
    )
    return where
