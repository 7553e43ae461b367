"""Secrets: nothing secret is committed outside the dev overlay (checked over the files, so a
component no overlay renders yet is covered too), and the optional ExternalSecrets component
produces exactly the Secrets, with the keys, that the workloads read, from the store its
patch names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.deploy.conftest import STORE
from tests.deploy.test_policies import _secret_refs, containers, pod_spec, workloads
from tests.support.manifests import DEPLOY, WITH_EXTERNAL_SECRETS, Render

DEV = Path("overlays") / "dev"
FROM_STORE = {"dispatchd-datastores", "dispatchd-jwt-keys", "dispatchd-page-token"}


def committed_secrets(deploy: Path) -> list[str]:
    """Secret values in the files under deploy, outside the dev overlay: a Secret with data, or
    a kustomize secretGenerator (whose literals, files or envs are values)."""
    found = []
    for path in sorted(deploy.rglob("*.yaml")):
        where = path.relative_to(deploy)
        if where.is_relative_to(DEV):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                found.append(f"{where}: Secret {doc['metadata']['name']} carries values")
            if doc.get("secretGenerator"):
                found.append(f"{where}: generates Secrets from committed values")
    return found


def test_nothing_secret_is_committed_outside_dev() -> None:
    assert committed_secrets(DEPLOY) == []
    assert "secretGenerator" in (DEPLOY / DEV / "kustomization.yaml").read_text(), "the scan skips nothing"


def test_the_scan_catches_committed_secrets(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"k": "v"}}
    (copy / "components" / "auth" / "leaked.yaml").write_text(yaml.safe_dump(secret))
    staging = copy / "overlays" / "staging" / "kustomization.yaml"
    staging.write_text(staging.read_text() + "secretGenerator:\n  - name: y\n    literals: [K=v]\n")
    found = committed_secrets(copy)
    assert len(found) == 2 and "auth/leaked.yaml" in found[0] and "staging" in found[1], found


def test_external_secrets_replace_the_out_of_band_secrets(renders: dict[str, Render]) -> None:
    render = renders[WITH_EXTERNAL_SECRETS]
    made = {e["spec"]["target"]["name"]: e for e in render.kind("ExternalSecret")}
    assert set(made) == FROM_STORE
    assert {e["spec"]["secretStoreRef"]["kind"] for e in made.values()} == {"ClusterSecretStore"}
    assert {e["spec"]["secretStoreRef"]["name"] for e in made.values()} == {STORE}, "the patch names the store"
    assert not render.kind("Secret")

    # Each key a workload reads is one the ExternalSecret writes.
    read: dict[str, set[str]] = {}
    for workload in workloads(render):
        for c in containers(workload):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in FROM_STORE:
                    read.setdefault(ref["name"], set()).add(ref["key"])
        assert _secret_refs(workload) <= FROM_STORE | {"dispatchd-worker-token"}
        for volume in pod_spec(workload).get("volumes", []):
            if volume.get("secret", {}).get("secretName") in FROM_STORE:
                read.setdefault(volume["secret"]["secretName"], set())
    written = {name: {d["secretKey"] for d in e["spec"]["data"]} for name, e in made.items()}
    assert set(read) == FROM_STORE
    for name, keys in read.items():
        assert keys <= written[name], f"{name}: read {sorted(keys)}, written {sorted(written[name])}"
    assert written["dispatchd-jwt-keys"] == {"jwks.json"} and written["dispatchd-page-token"] == {"key"}
