"""Policy: one trust root across regions, so a certificate issued in one region is accepted in the other.

Each region's leaves come from Issuer dispatchd-ca over an intermediate named for the region
(dispatchd-intermediate-<DISPATCHD_REGION>); every intermediate is issued by the root Issuer,
which reads the out-of-band root Secret (the same in every region); and every CA file a
service or worker verifies against is the trust bundle (the root), never a leaf Secret's
ca.crt, which would be the region's intermediate and refuse the other region's peers.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator

import pytest

from tests.deploy.test_policies import containers, name, pod_spec, workloads
from tests.support.manifests import Obj, Render, broken_copy

ROOT_ISSUER = "dispatchd-root"
ROOT_SECRET = "dispatchd-root-ca"
TRUST_BUNDLE = "dispatchd-trust-bundle"
CA_SETTINGS = ("DISPATCHD_TLS_CLIENT_CA_FILE", "DISPATCHD_CA")
# Every overlay with mTLS; region pairs share one root.
MTLS_OVERLAYS = ("staging", "prod-region-a", "prod-region-b", "prod-region-a-cnpg", "prod-region-b-cnpg")
REGION_PAIRS = [("prod-region-a", "prod-region-b"), ("prod-region-a-cnpg", "prod-region-b-cnpg")]


def _issuer(render: Render, certificate: Obj) -> Obj | None:
    ref = certificate["spec"]["issuerRef"]
    found = [i for i in render.kind(ref.get("kind", "Issuer")) if i["metadata"]["name"] == ref["name"]]
    return found[0] if found else None


def _intermediate(render: Render) -> Obj | None:
    expected = f"dispatchd-intermediate-{render.config['DISPATCHD_REGION']}"
    found = [c for c in render.kind("Certificate") if c["metadata"]["name"] == expected]
    return found[0] if found else None


def leaves_chain_to_the_regions_intermediate(render: Render) -> list[str]:
    intermediate = _intermediate(render)
    if intermediate is None or not intermediate["spec"].get("isCA"):
        return [f"no CA Certificate dispatchd-intermediate-{render.config['DISPATCHD_REGION']}"]
    found = []
    for leaf in render.kind("Certificate"):
        if leaf["spec"].get("isCA"):
            continue
        issuer = _issuer(render, leaf)
        ca_secret = (issuer or {}).get("spec", {}).get("ca", {}).get("secretName")
        if ca_secret != intermediate["spec"]["secretName"]:
            found.append(f"{name(leaf)} is not issued by {name(intermediate)} (its issuer signs with {ca_secret})")
    return found


def intermediates_share_the_root(renders: list[Render]) -> list[str]:
    found = []
    for render in renders:
        intermediate = _intermediate(render)
        issuer = _issuer(render, intermediate) if intermediate else None
        if issuer is None or issuer["metadata"]["name"] != ROOT_ISSUER:
            found.append(f"{render.name}: the region's intermediate is not issued by Issuer {ROOT_ISSUER}")
        elif issuer["spec"].get("ca", {}).get("secretName") != ROOT_SECRET:
            found.append(f"{render.name}: {name(issuer)} does not sign with the shared root Secret {ROOT_SECRET}")
        # A Certificate writing the root Secret would mint a different root in each region.
        found += [
            f"{render.name}: {name(c)} writes the root Secret"
            for c in render.kind("Certificate")
            if c["spec"]["secretName"] == ROOT_SECRET
        ]
    return found


def _ca_files(render: Render, workload: Obj) -> Iterator[tuple[Obj, str]]:
    for container in containers(workload):
        settings = {e["name"]: e.get("value") for e in container.get("env", [])}
        if any("configMapRef" in e for e in container.get("envFrom", [])):
            settings = {**render.config, **settings}
        for key in CA_SETTINGS:
            if settings.get(key):
                yield container, str(settings[key])


def trust_bundle_is_the_root(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        for container, path in _ca_files(render, workload):
            directory, filename = posixpath.split(path)
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
            if not mounts:
                continue  # reads the setting but serves and dials nothing over TLS (the migration)
            sources = volumes[mounts[0]["name"]].get("projected", {}).get("sources", [])
            providers = [
                s["configMap"]["name"]
                for s in sources
                if "configMap" in s
                for item in s["configMap"].get("items", [])
                if item["path"] == filename and item["key"] == "ca.crt"
            ]
            if providers != [TRUST_BUNDLE]:
                found.append(f"{name(workload)}: {path} is not the trust bundle ConfigMap {TRUST_BUNDLE}'s ca.crt")
    return found


@pytest.mark.parametrize(
    "rule", [leaves_chain_to_the_regions_intermediate, trust_bundle_is_the_root], ids=lambda r: r.__name__
)
@pytest.mark.parametrize("overlay", MTLS_OVERLAYS)
def test_trust_policy(renders: dict[str, Render], overlay: str, rule: Callable[[Render], list[str]]) -> None:
    assert rule(renders[overlay]) == []


@pytest.mark.parametrize("pair", REGION_PAIRS, ids="+".join)
def test_both_regions_share_one_root(renders: dict[str, Render], pair: tuple[str, str]) -> None:
    first, second = (renders[o] for o in pair)
    assert intermediates_share_the_root([first, second]) == []
    assert {r.config["DISPATCHD_REGION"] for r in (first, second)} == {"region-a", "region-b"}


def test_every_mtls_overlay_has_ca_files_to_check(renders: dict[str, Render]) -> None:
    checked = {
        o: sorted(w["metadata"]["name"] for w in workloads(renders[o]) if list(_ca_files(renders[o], w)))
        for o in ("staging", "prod-region-a")
    }
    assert {"dispatchd-worker-gateway", "dispatchd-worker"} <= set(checked["staging"])
    assert "dispatchd-control-plane" in checked["prod-region-a"]


def _objects(objects: list[Obj], kind: str, object_name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == object_name)


def test_a_leaf_from_the_other_regions_intermediate_is_caught(renders: dict[str, Render]) -> None:
    def other_region(objects: list[Obj]) -> None:
        _objects(objects, "Issuer", "dispatchd-ca")["spec"]["ca"]["secretName"] = "dispatchd-intermediate-region-b"

    assert len(leaves_chain_to_the_regions_intermediate(broken_copy(renders["prod-region-a"], other_region))) == 3


def test_a_region_with_its_own_root_is_caught(renders: dict[str, Render]) -> None:
    def own_root(objects: list[Obj]) -> None:
        _objects(objects, "Certificate", "dispatchd-intermediate-region-b")["spec"]["issuerRef"]["name"] = "self"

    def root_minted_here(objects: list[Obj]) -> None:
        _objects(objects, "Certificate", "dispatchd-intermediate-region-b")["spec"]["secretName"] = ROOT_SECRET

    region_a = renders["prod-region-a"]
    assert intermediates_share_the_root([region_a, broken_copy(renders["prod-region-b"], own_root)])
    assert intermediates_share_the_root([region_a, broken_copy(renders["prod-region-b"], root_minted_here)])


def test_a_ca_file_from_the_leaf_secret_is_caught(renders: dict[str, Render]) -> None:
    def leaf_ca(objects: list[Obj]) -> None:
        volume = pod_spec(_objects(objects, "Deployment", "dispatchd-worker"))["volumes"]
        client_tls = next(v for v in volume if v["name"] == "client-tls")
        client_tls["projected"]["sources"][1] = {
            "secret": {"name": "dispatchd-worker-client", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        }

    assert trust_bundle_is_the_root(broken_copy(renders["staging"], leaf_ca)) == [
        "Deployment/dispatchd-worker: /etc/dispatchd/client-tls/ca.crt is not the trust bundle ConfigMap "
        "dispatchd-trust-bundle's ca.crt"
    ]
