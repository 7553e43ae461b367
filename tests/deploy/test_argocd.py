"""Argo CD: the ApplicationSets expanded into the Applications Argo CD would generate, the
project's scope, who may sync production, and when.

The expansion substitutes `{{.key}}` from each list element and fails on a missing key, as
the sets' `missingkey=error` makes Argo CD do; the generated Applications are then validated
against the kept Application schema like any rendered object.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.manifests import DEPLOY, OVERLAYS, PROD_REGIONS, ROOT, WITH_EXTERNAL_SECRETS, Obj, Render
from tests.support.schemas import problems

PROJECT = "dispatchd"
PRODUCTION = {f"dispatchd-{region}" for region in PROD_REGIONS}
PROD_DEPLOYER = "prod-deployer"
# Hours of the week (cron numbering: day 0 is Sunday) in which production may sync.
WORKING_HOURS = {day * 24 + hour for day in range(1, 6) for hour in range(9, 17)}
WEEK = 7 * 24
PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def expand(template: Any, element: dict[str, str]) -> Any:
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda m: element[m.group(1)], template)
    if isinstance(template, list):
        return [expand(item, element) for item in template]
    if isinstance(template, dict):
        return {key: expand(value, element) for key, value in template.items()}
    return template


def generated(render: Render) -> list[Obj]:
    """The Applications every ApplicationSet in render generates."""
    apps = []
    for appset in render.kind("ApplicationSet"):
        spec = appset["spec"]
        assert spec.get("goTemplateOptions") == ["missingkey=error"], "a missing key must fail generation"
        for generator in spec["generators"]:
            for element in generator["list"]["elements"]:
                body = expand(spec["template"], element)
                apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **body})
    return apps


def project_of(render: Render) -> Obj:
    (project,) = render.kind("AppProject")
    return project


def test_the_hand_written_applications_are_gone(renders: dict[str, Render]) -> None:
    assert renders["argocd"].kind("ApplicationSet")
    assert not renders["argocd"].kind("Application")


def test_generated_applications_validate(renders: dict[str, Render]) -> None:
    apps = generated(renders["argocd"])
    assert apps
    found = [p for app in apps for p in problems(app)]
    assert not found, "\n".join(found)
    assert len({a["metadata"]["name"] for a in apps}) == len(apps), "two elements generate one name"


def test_the_project_is_scoped(renders: dict[str, Render]) -> None:
    project = project_of(renders["argocd"])["spec"]
    scoped = [project["sourceRepos"], project["destinations"], project["namespaceResourceWhitelist"]]
    scoped += [project["clusterResourceWhitelist"], [r["policies"] for r in project["roles"]]]
    assert "*" not in json.dumps(scoped), "the AppProject must not allow by wildcard"
    allowed = {(g["group"], g["kind"]) for g in project["namespaceResourceWhitelist"]}
    cluster = {(g["group"], g["kind"]) for g in project["clusterResourceWhitelist"]}
    for overlay in [*OVERLAYS, WITH_EXTERNAL_SECRETS]:
        for obj in renders[overlay].objects:
            group = obj["apiVersion"].rpartition("/")[0]
            namespace = obj["metadata"].get("namespace")
            if (group, obj["kind"]) in cluster:
                assert namespace is None, f"{overlay}: cluster-scoped {obj['kind']} with a namespace"
            else:
                assert (group, obj["kind"]) in allowed, f"{overlay}: the project does not allow {group}/{obj['kind']}"
                assert namespace == "dispatchd", f"{overlay}: {obj['kind']} outside the namespace"


def test_applications_cover_every_deployed_environment(renders: dict[str, Render]) -> None:
    project = project_of(renders["argocd"])
    apps = {app["metadata"]["labels"]["dispatchd.io/environment"]: app for app in generated(renders["argocd"])}
    assert set(apps) == {"dev", "staging", *PROD_REGIONS}
    destinations = [(d.get("server"), d.get("name"), d["namespace"]) for d in project["spec"]["destinations"]]
    for env, app in apps.items():
        spec = app["spec"]
        assert spec["project"] == project["metadata"]["name"]
        assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert (ROOT / spec["source"]["path"]).resolve() == (DEPLOY / "overlays" / env).resolve()
        dest = spec["destination"]
        assert (dest.get("server"), dest.get("name"), dest["namespace"]) in destinations, f"{env}: destination"
        automated = spec.get("syncPolicy", {}).get("automated")
        if env.startswith("prod"):
            assert automated is None, f"{env}: production syncs by hand"
        else:
            assert automated == {"prune": True, "selfHeal": True}, f"{env}: automated sync with prune and self-heal"


# --------------------------------------------------------------------------- the rules


def only_prod_deployers_sync_production(project: Obj) -> list[str]:
    """Every role reads; syncing production is the prod-deployer role's alone, for one group."""
    found = []
    roles = {role["name"]: role for role in project["spec"].get("roles", [])}
    if roles.get(PROD_DEPLOYER, {}).get("groups") != ["dispatchd-prod-deployers"]:
        found.append(f"no {PROD_DEPLOYER} role bound to exactly the dispatchd-prod-deployers group")
    for name, role in roles.items():
        for policy in role.get("policies", []):
            _, subject, resource, action, obj, effect = (part.strip() for part in policy.split(","))
            app = obj.removeprefix(f"{PROJECT}/")
            if subject != f"proj:{PROJECT}:{name}" or resource != "applications" or effect != "allow":
                found.append(f"role {name}: policy {policy!r} is not an allow on this role's applications")
            elif action not in ("get", "sync"):
                found.append(f"role {name}: {action} is more than reading and syncing")
            elif action == "sync" and app in PRODUCTION and name != PROD_DEPLOYER:
                found.append(f"role {name} may sync production ({app})")
    synced = {p.split(",")[4].strip() for p in roles.get(PROD_DEPLOYER, {}).get("policies", []) if ", sync," in p}
    found += [f"{PROD_DEPLOYER} cannot sync {app}" for app in sorted(PRODUCTION) if f"{PROJECT}/{app}" not in synced]
    return found


def _cron_hours(schedule: str) -> set[int]:
    """The hours of the week a five-field cron schedule starts in (minute 0, any day of month)."""
    minute, hour, day_of_month, month, day_of_week = schedule.split()
    assert (minute, day_of_month, month) == ("0", "*", "*"), f"unsupported schedule {schedule}"

    def values(field: str, top: int) -> set[int]:
        result: set[int] = set()
        for part in field.split(","):
            low, _, high = part.partition("-")
            result |= set(range(top)) if part == "*" else set(range(int(low), int(high or low) + 1))
        return result

    return {day * 24 + h for day in values(day_of_week, 7) for h in values(hour, 24)}


def _hours(duration: str) -> int:
    match = re.fullmatch(r"(\d+)h", duration)
    assert match, f"unsupported duration {duration}"
    return int(match.group(1))


def production_syncs_only_in_working_hours(project: Obj) -> list[str]:
    """Deny windows leave exactly Monday to Friday, 09:00-17:00 UTC, open to production, for
    manual syncs too; dev and staging have no window."""
    found = []
    windows = project["spec"].get("syncWindows", [])
    open_hours = set(range(WEEK))
    for window in windows:
        apps = set(window.get("applications", []))
        if apps - PRODUCTION or window.get("namespaces") or window.get("clusters"):
            found.append(f"window {window['schedule']} reaches beyond production: {sorted(apps - PRODUCTION)}")
        if apps != PRODUCTION:
            found.append(f"window {window['schedule']} covers {sorted(apps)}, not both regions")
        if window["kind"] != "deny" or window.get("manualSync") or window.get("timeZone") != "UTC":
            found.append(f"window {window['schedule']}: not a UTC deny window that also stops manual syncs")
            continue
        for start in _cron_hours(window["schedule"]):
            open_hours -= {(start + h) % WEEK for h in range(_hours(window["duration"]))}
    if open_hours != WORKING_HOURS:
        extra, missing = sorted(open_hours - WORKING_HOURS), sorted(WORKING_HOURS - open_hours)
        found.append(f"production may sync at hours-of-week {extra} and not at {missing}")
    return found


def autoscaled_replicas_are_left_alone(apps: list[Obj], renders: dict[str, Render]) -> list[str]:
    """An Application deploying HorizontalPodAutoscalers ignores its targets' replica counts."""
    found = []
    for app in apps:
        render = renders[app["metadata"]["labels"]["dispatchd.io/environment"]]
        spec = app["spec"]
        ignored = {
            (d.get("kind"), d.get("name"))
            for d in spec.get("ignoreDifferences", [])
            if "/spec/replicas" in d.get("jsonPointers", [])
        }
        for hpa in render.kind("HorizontalPodAutoscaler"):
            target = (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
            if target not in ignored:
                found.append(f"{app['metadata']['name']}: a sync resets the replicas of autoscaled {target[1]}")
            if "RespectIgnoreDifferences=true" not in spec.get("syncPolicy", {}).get("syncOptions", []):
                found.append(f"{app['metadata']['name']}: syncs apply ignored fields (RespectIgnoreDifferences)")
    return found


def test_only_prod_deployers_sync_production(renders: dict[str, Render]) -> None:
    assert only_prod_deployers_sync_production(project_of(renders["argocd"])) == []


def test_production_syncs_only_in_working_hours(renders: dict[str, Render]) -> None:
    assert production_syncs_only_in_working_hours(project_of(renders["argocd"])) == []


def test_autoscaled_replicas_are_left_alone(renders: dict[str, Render]) -> None:
    apps = generated(renders["argocd"])
    assert any(
        renders[a["metadata"]["labels"]["dispatchd.io/environment"]].kind("HorizontalPodAutoscaler") for a in apps
    )
    assert autoscaled_replicas_are_left_alone(apps, renders) == []


def _role(project: Obj, name: str) -> Obj:
    role: Obj = next(r for r in project["spec"]["roles"] if r["name"] == name)
    return role


PROJECT_MUTATIONS: list[tuple[Callable[[Obj], list[str]], Callable[[Obj], Any]]] = [
    (
        only_prod_deployers_sync_production,
        lambda p: _role(p, "developer")["policies"].append(
            "p, proj:dispatchd:developer, applications, sync, dispatchd/dispatchd-prod-region-b, allow"
        ),
    ),
    (
        only_prod_deployers_sync_production,
        lambda p: _role(p, PROD_DEPLOYER)["policies"].append(
            "p, proj:dispatchd:prod-deployer, applications, delete, dispatchd/dispatchd-prod-region-a, allow"
        ),
    ),
    (only_prod_deployers_sync_production, lambda p: _role(p, PROD_DEPLOYER).update(groups=["everyone"])),
    (production_syncs_only_in_working_hours, lambda p: p["spec"]["syncWindows"][0].update(duration="15h")),
    (production_syncs_only_in_working_hours, lambda p: p["spec"]["syncWindows"][1].update(manualSync=True)),
    (production_syncs_only_in_working_hours, lambda p: p["spec"]["syncWindows"].pop()),
    (production_syncs_only_in_working_hours, lambda p: p["spec"]["syncWindows"][0]["applications"].pop()),
]


@pytest.mark.parametrize(("rule", "mutate"), PROJECT_MUTATIONS, ids=[r.__name__ for r, _ in PROJECT_MUTATIONS])
def test_project_rules_catch_violations(
    renders: dict[str, Render], rule: Callable[[Obj], list[str]], mutate: Callable[[Obj], Any]
) -> None:
    broken = copy.deepcopy(project_of(renders["argocd"]))
    mutate(broken)
    assert rule(broken), f"{rule.__name__} missed the violation"


def test_the_replica_rule_catches_a_missing_ignore(renders: dict[str, Render]) -> None:
    apps = copy.deepcopy(generated(renders["argocd"]))
    for app in apps:
        app["spec"].pop("ignoreDifferences", None)
    assert autoscaled_replicas_are_left_alone(apps, renders)
