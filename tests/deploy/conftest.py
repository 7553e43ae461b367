"""Every overlay, the ExternalSecrets variant and the Argo CD folder, rendered once per session
(tests/support/manifests.py)."""

from __future__ import annotations

import pytest

from tests.support.manifests import (
    DEPLOY,
    OVERLAYS,
    WITH_EXTERNAL_SECRETS,
    Render,
    external_secrets_overlay,
    kustomize,
)

# The ClusterSecretStore the ExternalSecrets variant is patched to read.
STORE = "vault-region-a"


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    """Every overlay, prod-region-a with the ExternalSecrets component, and deploy/argocd, rendered once."""
    result = {name: Render(name, kustomize(DEPLOY / "overlays" / name)) for name in OVERLAYS}
    overlay = external_secrets_overlay(tmp_path_factory.mktemp("external-secrets"), STORE)
    result[WITH_EXTERNAL_SECRETS] = Render(WITH_EXTERNAL_SECRETS, kustomize(overlay))
    result["argocd"] = Render("argocd", kustomize(DEPLOY / "argocd"))
    return result
