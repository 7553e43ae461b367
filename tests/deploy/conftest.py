"""Every overlay and the Argo CD folder, rendered once per session (tests/support/manifests.py)."""

from __future__ import annotations

import pytest

from tests.support.manifests import DEPLOY, OVERLAYS, Render, kustomize


@pytest.fixture(scope="session")
def renders() -> dict[str, Render]:
    """Every overlay and deploy/argocd, rendered once."""
    result = {name: Render(name, kustomize(DEPLOY / "overlays" / name)) for name in OVERLAYS}
    result["argocd"] = Render("argocd", kustomize(DEPLOY / "argocd"))
    return result
