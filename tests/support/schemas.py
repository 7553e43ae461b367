"""Validating one object: built-in kinds against the Kubernetes OpenAPI schemas of a pinned
version (kubernetes-validate, strict: unknown fields are errors), custom resources against the
JSON schemas kept in deploy/schemas (kubernetes-validate does not know them).

Invariant: an object of a kind with no schema anywhere is a problem, never silently accepted.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate

from tests.support.manifests import DEPLOY, Obj

# The version kind runs (deploy/kind/cluster.yaml) and the manifests are validated against.
KUBERNETES_VERSION = "1.31.0"
SCHEMAS = DEPLOY / "schemas"


def kept_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    path = SCHEMAS / f"{api_version.replace('/', '_')}_{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def problems(obj: Obj) -> list[str]:
    name = f"{obj['kind']}/{obj['metadata'].get('name')}"
    schema = kept_schema(obj["apiVersion"], obj["kind"])
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no schema for {obj['apiVersion']} {obj['kind']}: add one to deploy/schemas"]
    return []
