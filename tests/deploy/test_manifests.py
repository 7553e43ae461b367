"""Every rendered object is valid: built-in kinds against the Kubernetes OpenAPI schemas of a
pinned version (kubernetes-validate, strict: unknown fields are errors), custom resources
against the JSON schemas kept in deploy/schemas (kubernetes-validate does not know them)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.manifests import DEPLOY, OVERLAYS, WITH_EXTERNAL_SECRETS, Obj, Render
from tests.support.schemas import KUBERNETES_VERSION, SCHEMAS, kept_schema, problems


@pytest.mark.parametrize("name", [*OVERLAYS, WITH_EXTERNAL_SECRETS, "argocd"])
def test_every_object_validates(renders: dict[str, Render], name: str) -> None:
    found = [p for obj in renders[name].objects for p in problems(obj)]
    assert not found, "\n".join(found)


def test_the_kind_cluster_config_validates() -> None:
    config = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    schema = kept_schema(config["apiVersion"], config["kind"])
    assert schema is not None
    jsonschema.validate(config, schema)
    versions = {node["image"].split(":v")[1].rsplit(".", 1)[0] for node in config["nodes"]}
    assert versions == {KUBERNETES_VERSION.rsplit(".", 1)[0]}, "kind runs another Kubernetes than the one validated"


def test_every_kept_schema_is_a_valid_schema() -> None:
    files = sorted(SCHEMAS.glob("*.json"))
    assert files
    for path in files:
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


CERTIFICATE: Obj = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "Certificate",
    "metadata": {"name": "c"},
    "spec": {"secretName": "s", "issuerRef": {"name": "i", "kind": "Issuer"}, "dnsNames": ["a"]},
}
APPLICATION: Obj = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Application",
    "metadata": {"name": "a"},
    "spec": {"project": "p", "source": {"repoURL": "r", "path": "x"}, "destination": {"name": "d", "namespace": "n"}},
}
APPLICATION_SET: Obj = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "ApplicationSet",
    "metadata": {"name": "s"},
    "spec": {
        "goTemplate": True,
        "generators": [{"list": {"elements": [{"env": "dev"}]}}],
        "template": {"metadata": {"name": "a-{{.env}}"}, "spec": APPLICATION["spec"]},
    },
}
EXTERNAL_SECRET: Obj = {
    "apiVersion": "external-secrets.io/v1beta1",
    "kind": "ExternalSecret",
    "metadata": {"name": "e"},
    "spec": {
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": "store"},
        "target": {"name": "t", "creationPolicy": "Owner"},
        "data": [{"secretKey": "K", "remoteRef": {"key": "k", "property": "p"}}],
    },
}

POD_MONITOR: Obj = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": {"name": "m"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "podMetricsEndpoints": [{"port": "metrics"}]},
}
RULE = {"alert": "A", "expr": "up == 0", "for": "5m", "labels": {"severity": "warning"}}
PROMETHEUS_RULE: Obj = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "r"},
    "spec": {"groups": [{"name": "g", "rules": [RULE]}]},
}


def with_rule(**fields: Any) -> Obj:
    return changed(PROMETHEUS_RULE, "spec.groups", [{"name": "g", "rules": [{**RULE, **fields}]}])


def changed(obj: Obj, path: str, value: Any) -> Obj:
    """A deep copy of obj with the dotted path set (value None: removed)."""
    copy: Obj = json.loads(json.dumps(obj))
    *parents, leaf = path.split(".")
    node = copy
    for key in parents:
        node = node[key]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return copy


@pytest.mark.parametrize(
    ("obj", "valid"),
    [
        (CERTIFICATE, True),
        (changed(CERTIFICATE, "spec.dnsName", ["typo"]), False),
        (changed(CERTIFICATE, "spec.issuerRef", None), False),
        (changed(CERTIFICATE, "spec.duration", "90 days"), False),
        (changed(CERTIFICATE, "spec.usages", ["server auth", "serverauth"]), False),
        (APPLICATION, True),
        (changed(APPLICATION, "spec.destination", {"name": "d", "server": "https://x"}), False),
        (changed(APPLICATION, "spec.syncPolicy", {"automated": {"prune": True, "selfheal": True}}), False),
        (changed(APPLICATION, "spec.project", None), False),
        (APPLICATION_SET, True),
        (changed(APPLICATION_SET, "spec.generators", [{"clusters": {}}]), False),
        (changed(APPLICATION_SET, "spec.generators", [{"list": {"elements": [{"env": 1}]}}]), False),
        (changed(APPLICATION_SET, "spec.syncPolicy", {"applicationsSync": "create-upate"}), False),
        (changed(APPLICATION_SET, "spec.template", {"metadata": {"nam": "a"}, "spec": {}}), False),
        (EXTERNAL_SECRET, True),
        (changed(EXTERNAL_SECRET, "spec.secretStoreRef", {"kind": "ClusterStore", "name": "store"}), False),
        (changed(EXTERNAL_SECRET, "spec.target", {"name": "t", "creationPolicy": "owner"}), False),
        (changed(EXTERNAL_SECRET, "spec.data", [{"secretKey": "K", "remoteRef": {"name": "k"}}]), False),
        (changed(EXTERNAL_SECRET, "spec.data", None), False),
        (POD_MONITOR, True),
        (changed(POD_MONITOR, "spec.podMetricsEndpoints", [{"targetPort": "metrics"}]), False),
        (changed(POD_MONITOR, "spec.podMetricsEndpoints", []), False),
        (changed(POD_MONITOR, "spec.selector", {"matchLabel": {"a": "b"}}), False),
        (PROMETHEUS_RULE, True),
        (with_rule(annotation={"summary": "s"}), False),
        (with_rule(**{"for": "30 seconds"}), False),
        (with_rule(record="r"), False),
        (with_rule(expr=None), False),
    ],
)
def test_kept_schemas_reject_mistakes(obj: Obj, valid: bool) -> None:
    schema = kept_schema(obj["apiVersion"], obj["kind"])
    assert schema is not None
    assert jsonschema.Draft202012Validator(schema).is_valid(obj) == valid


def test_schemas_directory_has_only_json() -> None:
    assert {p.suffix for p in SCHEMAS.iterdir()} == {".json"}
