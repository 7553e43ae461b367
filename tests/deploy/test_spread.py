"""Policy: in-cluster gRPC clients spread over replicas (headless Services, `dns:///` targets).

A ClusterIP Service pins a long-lived HTTP/2 client to one pod; so the control plane and the
gateway each get a headless twin (clusterIP: None, same selector and grpc port), and every
in-cluster target names one as `dns:///<name>.<namespace>.svc.cluster.local:<port>`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.test_policies import containers, workloads
from tests.support.manifests import OVERLAYS, Obj, Render, broken_copy

SPREAD = ("dispatchd-control-plane", "dispatchd-worker-gateway")
TARGET_SETTINGS = ("DISPATCHD_CONTROL_PLANE_TARGET", "DISPATCHD_GATEWAY_TARGET")


def _services(render: Render) -> dict[str, Obj]:
    return {s["metadata"]["name"]: s for s in render.kind("Service")}


def headless_twins(render: Render) -> list[str]:
    services = _services(render)
    found = []
    for base in SPREAD:
        twin = services.get(f"{base}-headless")
        if twin is None or twin["spec"].get("clusterIP") != "None":
            found.append(f"{base}: no headless twin (clusterIP: None)")
        elif twin["spec"]["selector"] != services[base]["spec"]["selector"]:
            found.append(f"{base}-headless selects other pods than {base}")
    return found


def _targets(render: Render) -> Iterator[tuple[str, str]]:
    for key in TARGET_SETTINGS:
        if key in render.config:
            yield "dispatchd-config", render.config[key]
    for workload in workloads(render):
        for container in containers(workload):
            for env in container.get("env", []):
                if env["name"] in TARGET_SETTINGS and "value" in env:
                    yield workload["metadata"]["name"], env["value"]


def dns_targets(render: Render) -> list[str]:
    services = _services(render)
    found = []
    for owner, target in _targets(render):
        host, _, port = target.removeprefix("dns:///").rpartition(":")
        service, _, rest = host.partition(".")
        headless = services.get(service, {}).get("spec", {}).get("clusterIP") == "None"
        ports = {str(p["port"]) for p in services.get(service, {}).get("spec", {}).get("ports", [])}
        namespace = services.get(service, {}).get("metadata", {}).get("namespace")
        if not (
            target.startswith("dns:///") and headless and port in ports and rest == f"{namespace}.svc.cluster.local"
        ):
            found.append(f"{owner}: {target} is not dns:///<headless Service>.<ns>.svc.cluster.local:<its port>")
    return found


@pytest.mark.parametrize("rule", [headless_twins, dns_targets], ids=lambda r: r.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_spread_policy(renders: dict[str, Render], overlay: str, rule: object) -> None:
    assert rule(renders[overlay]) == []  # type: ignore[operator]


def test_the_dev_render_has_targets_to_check(renders: dict[str, Render]) -> None:
    assert [owner for owner, _ in _targets(renders["dev"])] == ["dispatchd-dashboard", "dispatchd-worker"]


def test_a_missing_headless_service_is_caught(renders: dict[str, Render]) -> None:
    def drop(objects: list[Obj]) -> None:
        objects[:] = [o for o in objects if o["metadata"]["name"] != "dispatchd-worker-gateway-headless"]

    assert headless_twins(broken_copy(renders["prod"], drop)) == [
        "dispatchd-worker-gateway: no headless twin (clusterIP: None)"
    ]
    assert dns_targets(broken_copy(renders["dev"], drop))  # the example worker's target now dangles


def test_a_clusterip_target_is_caught(renders: dict[str, Render]) -> None:
    def cluster_ip(objects: list[Obj]) -> None:
        for obj in objects:
            if obj["metadata"]["name"] == "dispatchd-worker" and obj["kind"] == "Deployment":
                for env in obj["spec"]["template"]["spec"]["containers"][0]["env"]:
                    if env["name"] == "DISPATCHD_GATEWAY_TARGET":
                        env["value"] = "dispatchd-worker-gateway:50052"

    assert dns_targets(broken_copy(renders["dev"], cluster_ip))
