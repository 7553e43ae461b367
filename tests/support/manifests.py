"""Rendering the Kubernetes manifests in deploy/ with `kubectl kustomize`, for tests/deploy.

kubectl (with its built-in kustomize) is the one tool here that does not come from
requirements.lock. Without it these tests are skipped, unless DISPATCHD_REQUIRE_DEPLOY_TOOLS
is set (GitHub CI sets it), when its absence fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "staging", "prod", "prod-region-a", "prod-region-b", "prod-region-a-cnpg", "prod-region-b-cnpg")
PROD_REGIONS = ("prod-region-a", "prod-region-b")

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
