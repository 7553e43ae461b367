"""Policy checks over the rendered manifests, one small function per rule, run on every overlay.

Each check returns the violations it finds (empty: the overlay complies), so a failure names
the object and the rule. No policy engine installs and runs offline here, so the rules are
these few lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.manifests import OVERLAYS, WITH_EXTERNAL_SECRETS, Obj, Render, assert_catches

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
OUR_IMAGE = "ghcr.io/dispatchd/dispatchd"
# Containers that serve nothing and so have nothing to probe, with the reason.
UNPROBED = {"dispatchd-worker": "a worker only dials out; it reconnects itself and exits on fatal errors"}
# Secrets the manifests reference but never define outside dev: created out of band (or by
# cert-manager, from a Certificate in the same render).
OUT_OF_BAND_SECRETS = {
    "dispatchd-datastores",
    "dispatchd-postgres",
    "dispatchd-redis",
    "dispatchd-jwt-keys",
    "dispatchd-page-token",
    "dispatchd-worker-token",
    "dispatchd-db-app",  # components/cloudnative-pg: the Cluster's owner, identical in both regions
}


def workloads(render: Render) -> Iterator[Obj]:
    for kind in WORKLOAD_KINDS:
        yield from render.kind(kind)


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --------------------------------------------------------------------------- the rules


def probes_present(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        if workload["kind"] == "Job" or workload["metadata"]["name"] in UNPROBED:
            continue
        for c in pod_spec(workload)["containers"]:
            missing = [p for p in ("readinessProbe", "livenessProbe") if p not in c]
            if missing:
                found.append(f"{name(workload)} container {c['name']} lacks {missing}")
    return found


def limits_set(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        for c in containers(workload):
            resources = c.get("resources", {})
            for section in ("requests", "limits"):
                lacking = {"cpu", "memory"} - set(resources.get(section, {}))
                if lacking:
                    found.append(f"{name(workload)} container {c['name']}: no {section} for {sorted(lacking)}")
    return found


def hardened(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            found.append(f"{name(workload)}: seccompProfile is not RuntimeDefault")
        if any(pod.get(flag) for flag in ("hostNetwork", "hostPID", "hostIPC")):
            found.append(f"{name(workload)}: shares a host namespace")
        if any("hostPath" in v for v in pod.get("volumes", [])):
            found.append(f"{name(workload)}: mounts a hostPath")
        if pod.get("automountServiceAccountToken") is not False:
            found.append(f"{name(workload)}: mounts a service account token it does not need")
        for c in containers(workload):
            sc = c.get("securityContext", {})
            where = f"{name(workload)} container {c['name']}"
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                found.append(f"{where}: runAsNonRoot is not set")
            if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
                found.append(f"{where}: no non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                found.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: privilege escalation is allowed")
            if sc.get("privileged"):
                found.append(f"{where}: privileged")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
                found.append(f"{where}: capabilities are not all dropped")
    return found


def images_pinned(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        for c in containers(workload):
            image = c["image"]
            named, _, digest = image.partition("@")
            repository, _, tag = named.rpartition(":")
            if "/" in tag:  # the colon was a registry's port
                repository, tag = named, ""
            if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                found.append(f"{name(workload)} container {c['name']}: image {image} has a malformed digest")
            if digest and not tag:
                continue
            if not tag or tag == "latest":
                found.append(f"{name(workload)} container {c['name']}: image {image} has no pinned tag")
            elif repository == OUR_IMAGE and not re.fullmatch(r"\d+\.\d+\.\d+([-.][0-9A-Za-z.-]+)?", tag):
                found.append(f"{name(workload)}: dispatchd image tag {tag} is not a release version")
            elif not re.search(r"\d", tag):
                found.append(f"{name(workload)}: image {image} is pinned to a moving tag")
    return found


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def network_policies_cover_workloads(render: Render) -> list[str]:
    policies = render.kind("NetworkPolicy")
    deny_all = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    found = [] if deny_all else ["no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"]
    for workload in workloads(render):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)]
        if not own:
            found.append(f"{name(workload)}: no NetworkPolicy allows its paths (only the namespace-wide ones apply)")
    return found


def no_secret_values_outside_dev(render: Render) -> list[str]:
    if render.name == "dev":
        return []
    return [f"{name(s)} carries values" for s in render.kind("Secret") if s.get("data") or s.get("stringData")]


def referenced_secrets_exist(render: Render) -> list[str]:
    defined = {s["metadata"]["name"] for s in render.kind("Secret")}
    defined |= {c["spec"]["secretName"] for c in render.kind("Certificate")}
    defined |= {i["spec"]["ca"]["secretName"] for i in render.kind("Issuer") if "ca" in i["spec"]}
    found = []
    for workload in workloads(render):
        volumes = pod_spec(workload).get("volumes", [])
        refs = {v["secret"]["secretName"] for v in volumes if "secret" in v}
        projected = [s for v in volumes for s in v.get("projected", {}).get("sources", [])]
        refs |= {s["secret"]["name"] for s in projected if "secret" in s}
        refs |= _secret_refs(workload)
        refs |= {e["secretRef"]["name"] for c in containers(workload) for e in c.get("envFrom", []) if "secretRef" in e}
        for ref in sorted(refs - defined - OUT_OF_BAND_SECRETS):
            found.append(f"{name(workload)} references Secret {ref}, which nothing creates")
    return found


def disruption_budgets_need_replicas(render: Render) -> list[str]:
    found = []
    deployments = [*render.kind("Deployment"), *render.kind("StatefulSet")]
    for pdb in render.kind("PodDisruptionBudget"):
        targets = [d for d in deployments if selects(pdb["spec"]["selector"], _pod_labels(d))]
        if not targets:
            found.append(f"{name(pdb)} selects no workload")
        found += [
            f"{name(pdb)} guards {name(d)} with {d['spec'].get('replicas', 1)} replica(s)"
            for d in targets
            if d["spec"].get("replicas", 1) < 2
        ]
    guarded = {
        name(d)
        for p in render.kind("PodDisruptionBudget")
        for d in deployments
        if selects(p["spec"]["selector"], _pod_labels(d))
    }
    found += [
        f"{name(d)} has {d['spec']['replicas']} replicas but no PodDisruptionBudget"
        for d in deployments
        if d["spec"].get("replicas", 1) >= 2 and name(d) not in guarded
    ]
    return found


def postgres_data_is_persistent(render: Render) -> list[str]:
    found = []
    for workload in workloads(render):
        pod = pod_spec(workload)
        empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in containers(workload):
            for mount in c.get("volumeMounts", []):
                on_empty_dir = mount["mountPath"].startswith("/var/lib/postgresql") and mount["name"] in empty
                if on_empty_dir and render.name != "dev":
                    found.append(f"{name(workload)}: Postgres data on an emptyDir outside dev")
    for sts in render.kind("StatefulSet"):
        if sts["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "postgres":
            claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
            if "data" not in claims:
                found.append(f"{name(sts)}: no volumeClaimTemplate for its data")
    return found


def graceful_termination_covers_the_drain(render: Render) -> list[str]:
    """terminationGracePeriodSeconds must outlast preStop plus the service's own shutdown."""
    config = render.config
    grace = float(config["DISPATCHD_SHUTDOWN_GRACE_SECONDS"])
    ttl = float(config["DISPATCHD_LEADER_TTL_SECONDS"])
    # What each program does on SIGTERM before it exits, at worst (see server.serve).
    shutdown = {
        "control-plane": grace,  # server.stop(grace)
        "worker-gateway": 2 * grace,  # drain (up to grace) then server.stop(grace)
        "scheduler": ttl + 1 + grace,  # hand the lease over, then server.stop(grace)
    }
    found = []
    for d in render.kind("Deployment"):
        component = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")
        pod = pod_spec(d)
        if component == "worker":
            args = pod["containers"][0]["args"]
            needed = float(args[args.index("--grace-seconds") + 1])
        elif component in shutdown:
            needed = shutdown[component]
        else:
            continue
        pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        period = pod.get("terminationGracePeriodSeconds", 30)
        if period <= pre_stop + needed:
            found.append(f"{name(d)}: terminationGracePeriodSeconds {period} <= preStop {pre_stop} + shutdown {needed}")
    return found


def probes_use_the_health_port(render: Render) -> list[str]:
    """With client certificates required the API ports cannot be probed; the health port can."""
    health = render.config.get("DISPATCHD_HEALTH_LISTEN", "")
    if not health:
        return ["DISPATCHD_HEALTH_LISTEN is not set: probes have no plaintext health port"]
    port = int(health.rpartition(":")[2])
    found = []
    for d in render.kind("Deployment"):
        for c in pod_spec(d)["containers"]:
            for probe in ("startupProbe", "readinessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                if grpc is not None and grpc["port"] != port:
                    found.append(f"{name(d)}: {probe} uses port {grpc['port']}, not the health port {port}")
    return found


def hooks_run_after_what_they_read(render: Render) -> list[str]:
    """A PreSync hook runs before anything of the Sync phase exists, so it may only read
    out-of-band objects; a Sync hook may read objects of earlier waves."""

    def wave(obj: Obj) -> int:
        return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))

    rendered = {(o["kind"], o["metadata"]["name"]): o for o in render.objects}
    # An ExternalSecret's Secret appears in the ExternalSecret's phase and wave.
    rendered |= {("Secret", e["spec"]["target"]["name"]): e for e in render.kind("ExternalSecret")}
    found = []
    for job in render.kind("Job"):
        hook = job["metadata"].get("annotations", {}).get("argocd.argoproj.io/hook")
        if hook is None:
            continue
        reads = [("Secret", n) for n in _secret_refs(job)] + [("ConfigMap", n) for n in _configmap_refs(job)]
        for ref in reads:
            target = rendered.get(ref)
            if target is None:
                continue
            if hook == "PreSync":
                found.append(f"{name(job)} is a PreSync hook but reads {ref[0]} {ref[1]} from the Sync phase")
            elif wave(target) >= wave(job):
                found.append(f"{name(job)} (wave {wave(job)}) reads {ref[0]} {ref[1]} of wave {wave(target)}")
    return found


def _secret_refs(workload: Obj) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in containers(workload)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def _pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _configmap_refs(workload: Obj) -> set[str]:
    refs = set()
    for c in containers(workload):
        refs |= {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
    return refs


RULES: list[Callable[[Render], list[str]]] = [
    probes_present,
    limits_set,
    hardened,
    images_pinned,
    network_policies_cover_workloads,
    no_secret_values_outside_dev,
    referenced_secrets_exist,
    disruption_budgets_need_replicas,
    postgres_data_is_persistent,
    graceful_termination_covers_the_drain,
    probes_use_the_health_port,
    hooks_run_after_what_they_read,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("overlay", [*OVERLAYS, WITH_EXTERNAL_SECRETS])
def test_policy(renders: dict[str, Render], overlay: str, rule: Callable[[Render], list[str]]) -> None:
    violations = rule(renders[overlay])
    assert not violations, f"{overlay}: " + "\n".join(violations)


# The rules themselves must catch what they are for: each breaks one object and expects a finding.


def _first(objects: list[Obj], kind: str, prefix: str = "dispatchd-control-plane") -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix))


def _container(objects: list[Obj]) -> Obj:
    c: Obj = pod_spec(_first(objects, "Deployment"))["containers"][0]
    return c


def _pod(objects: list[Obj]) -> Obj:
    return pod_spec(_first(objects, "Deployment"))


HOOK = "argocd.argoproj.io/hook"


def _job(objects: list[Obj]) -> Obj:
    return _first(objects, "Job", "dispatchd-migrate")


def _postgres(objects: list[Obj]) -> Obj:
    return _first(objects, "StatefulSet", "dispatchd-postgres")


Rule = Callable[[Render], list[str]]
MUTATIONS: list[tuple[str, Rule, Callable[[list[Obj]], Any]]] = [
    ("staging", probes_present, lambda o: _container(o).pop("readinessProbe")),
    ("staging", limits_set, lambda o: _container(o)["resources"].pop("limits")),
    ("staging", hardened, lambda o: _container(o)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("staging", images_pinned, lambda o: _container(o).update(image=f"{OUR_IMAGE}:latest")),
    ("staging", network_policies_cover_workloads, lambda o: o.remove(_first(o, "NetworkPolicy", "dispatchd-default"))),
    (
        "staging",
        no_secret_values_outside_dev,
        lambda o: o.append({"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "eA=="}}),
    ),
    (
        "staging",
        referenced_secrets_exist,
        lambda o: _container(o)["env"][0]["valueFrom"]["secretKeyRef"].update(name="x"),
    ),
    (
        "staging",
        referenced_secrets_exist,
        lambda o: _pod(o)["volumes"][0]["projected"]["sources"][0]["secret"].update(name="x"),
    ),
    ("staging", disruption_budgets_need_replicas, lambda o: _first(o, "Deployment")["spec"].update(replicas=1)),
    ("staging", postgres_data_is_persistent, lambda o: _postgres(o)["spec"].pop("volumeClaimTemplates")),
    ("staging", graceful_termination_covers_the_drain, lambda o: _pod(o).update(terminationGracePeriodSeconds=10)),
    ("staging", probes_use_the_health_port, lambda o: _container(o)["readinessProbe"]["grpc"].update(port=50051)),
    ("dev", hooks_run_after_what_they_read, lambda o: _job(o)["metadata"]["annotations"].update({HOOK: "PreSync"})),
    (
        WITH_EXTERNAL_SECRETS,
        hooks_run_after_what_they_read,
        lambda o: _job(o)["metadata"]["annotations"].update({HOOK: "PreSync"}),
    ),
]


@pytest.mark.parametrize(("overlay", "rule", "mutate"), MUTATIONS, ids=[r.__name__ for _, r, _ in MUTATIONS])
def test_rules_catch_violations(
    renders: dict[str, Render], overlay: str, rule: Rule, mutate: Callable[[list[Obj]], Any]
) -> None:
    assert_catches(renders[overlay], rule, mutate)
