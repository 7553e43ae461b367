"""The CloudNativePG component (deploy/components/cloudnative-pg) in the two region overlays that
use it: one distributed topology whose designated primary is the region the services call
primary, a replica region bootstrapped and fed by streaming from the primary, DATABASE_URL on
the `-rw` Service, and Cluster objects that the kept CRD schema accepts, and rejects when
misspelt. The other overlays stay without it (it is an option)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest

from tests.support.manifests import DEPLOY, OVERLAYS, Obj, Render, kustomize

CNPG = ("prod-region-a-cnpg", "prod-region-b-cnpg")
SCHEMA = json.loads((DEPLOY / "schemas" / "postgresql.cnpg.io_v1_Cluster.json").read_text())


def cluster(render: Render) -> Obj:
    return render.one("Cluster", "dispatchd-db")


def test_only_the_cnpg_overlays_have_a_cluster(renders: dict[str, Render]) -> None:
    assert {name for name in OVERLAYS if renders[name].kind("Cluster")} == set(CNPG)


def test_one_topology_with_region_a_primary(renders: dict[str, Render]) -> None:
    a, b = (cluster(renders[name])["spec"] for name in CNPG)
    assert a["replica"] == {"self": "region-a", "primary": "region-a", "source": "region-b"}
    assert b["replica"] == {"self": "region-b", "primary": "region-a", "source": "region-a"}
    assert "initdb" in a["bootstrap"]
    assert b["bootstrap"] == {
        "pg_basebackup": {
            "source": "region-a",
            "database": "dispatchd",
            "owner": "dispatchd",
            "secret": {"name": "dispatchd-db-app"},
        }
    }
    # Every Cluster of a distributed topology lists all of them, identically.
    assert a["externalClusters"] == b["externalClusters"]
    assert {c["name"] for c in a["externalClusters"]} == {"region-a", "region-b"}
    for region in (renders[name] for name in CNPG):
        config = region.config
        spec = cluster(region)["spec"]
        assert (spec["replica"]["self"], spec["replica"]["primary"]) == (
            config["DISPATCHD_REGION"],
            config["DISPATCHD_PRIMARY_REGION"],
        )


def test_switching_the_primary_region_switches_the_designated_primary(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    for region in ("prod-region-a", "prod-region-b"):
        env = copy / "overlays" / region / "region.env"
        env.write_text(
            env.read_text().replace("DISPATCHD_PRIMARY_REGION=region-a", "DISPATCHD_PRIMARY_REGION=region-b")
        )
    for name in CNPG:
        spec = cluster(Render(name, kustomize(copy / "overlays" / name)))["spec"]
        assert spec["replica"]["primary"] == "region-b"


@pytest.mark.parametrize("name", CNPG)
def test_database_url_is_the_rw_service(renders: dict[str, Render], name: str) -> None:
    clients = [*renders[name].kind("Deployment"), *renders[name].kind("Job")]
    checked = 0
    for workload in clients:
        env = workload["spec"]["template"]["spec"]["containers"][0].get("env", [])
        names = [e["name"] for e in env]
        if "DATABASE_URL" not in names:
            continue
        url = env[names.index("DATABASE_URL")]["value"]
        assert re.fullmatch(r"postgresql://dispatchd:\$\(\w+\)@dispatchd-db-rw:5432/dispatchd", url), url
        # Kubernetes expands $(VAR) only from variables defined earlier in the list.
        for variable in re.findall(r"\$\((\w+)\)", url):
            assert variable in names[: names.index("DATABASE_URL")]
        checked += 1
    assert checked >= 3, "the control plane, scheduler and gateway all read DATABASE_URL"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("replica.primay", "region-a"),
        ("instance", 3),
        ("instances", 0),
        ("bootstrap.pg_basebackups", {"source": "region-a"}),
        ("externalClusters.0.connectionParameter", {"host": "h"}),
        ("externalClusters.0.sslKey.keys", "tls.key"),
        ("storage.sizes", "1Gi"),
        ("resources.request", {"cpu": "1"}),
        ("inheritedMetadata.label", {"a": "b"}),
    ],
)
def test_the_kept_schema_rejects_mistakes(renders: dict[str, Render], path: str, value: object) -> None:
    obj: Obj = json.loads(json.dumps(cluster(renders["prod-region-b-cnpg"])))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid(obj)
    *parents, leaf = path.split(".")
    node = obj["spec"]
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    assert not validator.is_valid(obj)


def test_the_replica_needs_a_source(renders: dict[str, Render]) -> None:
    obj: Obj = json.loads(json.dumps(cluster(renders["prod-region-b-cnpg"])))
    del obj["spec"]["replica"]["source"]
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(obj)
