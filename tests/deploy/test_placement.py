"""Placement and scale policy over the rendered overlays: replicas spread across zones and
nodes, the namespace under Pod Security `restricted`, autoscalers that can work, the scheduler
with its priority. One function per rule, each shown to catch a broken copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.test_policies import pod_spec, selects
from tests.support.manifests import OVERLAYS, WITH_EXTERNAL_SECRETS, Obj, Render, assert_catches
from tests.support.metric_names import EXPORTED

ZONE, NODE = "topology.kubernetes.io/zone", "kubernetes.io/hostname"
PSA_MODES = ("enforce", "audit", "warn")
AUTOSCALED = {"dispatchd-control-plane", "dispatchd-worker-gateway"}
# system-cluster-critical and system-node-critical sit at 2e9; user classes stay below 1e9.
MAX_USER_PRIORITY = 1_000_000_000

Rule = Callable[[Render], list[str]]


def _replicated(render: Render) -> list[Obj]:
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in render.kind("HorizontalPodAutoscaler")}
    return [
        w
        for w in [*render.kind("Deployment"), *render.kind("StatefulSet")]
        if w["spec"].get("replicas", 1) >= 2 or w["metadata"]["name"] in scaled
    ]


def spread_across_zones_and_nodes(render: Render) -> list[str]:
    """Every replicated workload spreads its own pods over zones and nodes; production's zone
    spread is hard, and ignores tainted (failed) nodes."""
    found = []
    for workload in _replicated(render):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        constraints = {c["topologyKey"]: c for c in pod_spec(workload).get("topologySpreadConstraints", [])}
        for key in (ZONE, NODE):
            constraint = constraints.get(key)
            if constraint is None:
                found.append(f"{where}: no topology spread over {key}")
            elif not selects(constraint["labelSelector"], labels) or constraint["maxSkew"] != 1:
                found.append(f"{where}: its {key} spread does not count its own pods with skew 1")
        zone = constraints.get(ZONE, {})
        strict = zone.get("whenUnsatisfiable") == "DoNotSchedule" and zone.get("nodeTaintsPolicy") == "Honor"
        if render.name.startswith("prod") and not strict:
            found.append(f"{where}: production's zone spread is not DoNotSchedule with nodeTaintsPolicy Honor")
    return found


def namespaces_are_restricted(render: Render) -> list[str]:
    namespaces = {n["metadata"]["name"]: n for n in render.kind("Namespace")}
    found = [] if "dispatchd" in namespaces else ["no Namespace dispatchd carrying the Pod Security labels"]
    for name, namespace in namespaces.items():
        labels = namespace["metadata"].get("labels", {})
        found += [
            f"Namespace/{name}: pod-security {mode} is {labels.get(f'pod-security.kubernetes.io/{mode}')}"
            for mode in PSA_MODES
            if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted"
        ]
    return found


def autoscalers_can_work(render: Render) -> list[str]:
    """Production autoscales the control plane and the gateway; an autoscaler's target exists,
    requests CPU (utilisation is relative to requests) and starts within its bounds, and a Pods
    metric is a gauge the service exports."""
    found = []
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in render.kind("HorizontalPodAutoscaler")}
    if render.name.startswith("prod"):
        found += [f"{name} is not autoscaled" for name in sorted(AUTOSCALED - set(hpas))]
    deployments = {d["metadata"]["name"]: d for d in render.kind("Deployment")}
    for target, hpa in hpas.items():
        spec = hpa["spec"]
        deployment = deployments.get(target)
        if deployment is None:
            found.append(f"HPA/{hpa['metadata']['name']} scales {target}, which is not rendered")
            continue
        if not 2 <= spec.get("minReplicas", 1) <= deployment["spec"].get("replicas", 1) <= spec["maxReplicas"]:
            found.append(f"HPA/{hpa['metadata']['name']}: replicas outside 2 <= min <= start <= max")
        kinds = {m["type"]: m for m in spec.get("metrics", [])}
        if kinds.get("Resource", {}).get("resource", {}).get("name") != "cpu":
            found.append(f"HPA/{hpa['metadata']['name']}: no CPU metric")
        if any("cpu" not in c.get("resources", {}).get("requests", {}) for c in pod_spec(deployment)["containers"]):
            found.append(f"HPA/{hpa['metadata']['name']}: {target} requests no CPU")
        for metric in spec.get("metrics", []):
            if metric["type"] == "Pods" and EXPORTED.get(metric["pods"]["metric"]["name"]) != "gauge":
                found.append(f"HPA/{hpa['metadata']['name']}: {metric['pods']['metric']['name']} is no exported gauge")
    gateway = hpas.get("dispatchd-worker-gateway")
    if gateway and not any(m["type"] == "Pods" for m in gateway["spec"]["metrics"]):
        found.append("the gateway does not scale on its worker streams")
    return found


def scheduler_has_priority(render: Render) -> list[str]:
    classes = {c["metadata"]["name"]: c for c in render.kind("PriorityClass")}
    found = []
    for d in render.kind("Deployment"):
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") != "scheduler":
            continue
        wanted = pod_spec(d).get("priorityClassName")
        priority = classes.get(wanted or "")
        if priority is None:
            found.append(f"the scheduler's PriorityClass {wanted} is not rendered")
        elif not 0 < priority["value"] < MAX_USER_PRIORITY or priority.get("globalDefault"):
            found.append(f"PriorityClass/{wanted}: value {priority['value']} or globalDefault out of place")
    return found


RULES: list[Rule] = [
    spread_across_zones_and_nodes,
    namespaces_are_restricted,
    autoscalers_can_work,
    scheduler_has_priority,
]


@pytest.mark.parametrize("overlay", [*OVERLAYS, WITH_EXTERNAL_SECRETS])
def test_placement(renders: dict[str, Render], overlay: str) -> None:
    found = {rule.__name__: rule(renders[overlay]) for rule in RULES}
    assert not any(found.values()), f"{overlay}: {found}"


def _named(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _spread(objects: list[Obj], name: str) -> list[Obj]:
    spread: list[Obj] = pod_spec(_named(objects, "Deployment", name))["topologySpreadConstraints"]
    return spread


def _gateway_hpa(objects: list[Obj]) -> Obj:
    return _named(objects, "HorizontalPodAutoscaler", "dispatchd-worker-gateway")


MUTATIONS: list[tuple[str, Rule, Callable[[list[Obj]], Any]]] = [
    ("staging", spread_across_zones_and_nodes, lambda o: _spread(o, "dispatchd-scheduler").pop(0)),
    (
        "staging",
        spread_across_zones_and_nodes,
        lambda o: _spread(o, "dispatchd-control-plane")[1]["labelSelector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "worker-gateway"}
        ),
    ),
    (
        "prod-region-b",
        spread_across_zones_and_nodes,
        lambda o: _spread(o, "dispatchd-worker-gateway")[0].pop("nodeTaintsPolicy"),
    ),
    (
        "dev",
        namespaces_are_restricted,
        lambda o: _named(o, "Namespace", "dispatchd")["metadata"]["labels"].pop("pod-security.kubernetes.io/warn"),
    ),
    ("staging", namespaces_are_restricted, lambda o: o.remove(_named(o, "Namespace", "dispatchd"))),
    ("prod", autoscalers_can_work, lambda o: o.remove(_named(o, "HorizontalPodAutoscaler", "dispatchd-control-plane"))),
    (
        "prod",
        autoscalers_can_work,
        lambda o: _gateway_hpa(o)["spec"]["metrics"][1]["pods"]["metric"].update(name="dispatchd_gateway_streams"),
    ),
    ("prod", autoscalers_can_work, lambda o: _gateway_hpa(o)["spec"].update(minReplicas=1)),
    ("prod", autoscalers_can_work, lambda o: _gateway_hpa(o)["spec"]["metrics"].pop(1)),
    ("dev", scheduler_has_priority, lambda o: o.remove(_named(o, "PriorityClass", "dispatchd-scheduler"))),
    (
        "dev",
        scheduler_has_priority,
        lambda o: pod_spec(_named(o, "Deployment", "dispatchd-scheduler")).pop("priorityClassName"),
    ),
]


@pytest.mark.parametrize(("overlay", "rule", "mutate"), MUTATIONS, ids=[r.__name__ for _, r, _ in MUTATIONS])
def test_placement_rules_catch_violations(
    renders: dict[str, Render], overlay: str, rule: Rule, mutate: Callable[[list[Obj]], Any]
) -> None:
    assert_catches(renders[overlay], rule, mutate)
