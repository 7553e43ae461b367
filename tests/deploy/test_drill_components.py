"""The drills' Kubernetes mode finds each component where the dev overlay (the one the kind
workflow deploys) puts it: the workload's kind and name, a selector that picks exactly its pods,
its first container, and the container ports the drills forward."""

from __future__ import annotations

import pytest

from dispatchd.devtools.drills.platform import COMPONENTS
from dispatchd.devtools.drills.workloads import PORTS, workload
from tests.support.manifests import Render


def selected(selector: str, labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, _, value in (term.partition("=") for term in selector.split(",")))


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_is_where_kubernetes_mode_looks(renders: dict[str, Render], component: str) -> None:
    target, _ = workload(component)
    dev = renders["dev"]
    (found,) = [o for o in dev.kind(target.kind) if o["metadata"]["name"] == target.name]
    template = found["spec"]["template"]
    pods = [
        o["metadata"]["name"]
        for kind in ("Deployment", "StatefulSet")
        for o in dev.kind(kind)
        if selected(target.selector, o["spec"]["template"]["metadata"]["labels"])
    ]
    assert pods == [target.name], f"{target.selector} selects the pods of {pods}"
    container = template["spec"]["containers"][0]
    assert container["name"] == target.container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {name: ports[name] for name in PORTS[component] if name in ports} == PORTS[component]
