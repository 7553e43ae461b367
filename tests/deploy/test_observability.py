"""Monitors, alerts and the dashboard of components/observability, checked without a cluster.

promtool is not available, so every alert and panel query goes through promql_parser and is
checked against the metric contract (tests/support/promql.py); each alert names a severity,
says what happened and links a README runbook that exists; the PodMonitors reach the port
every dispatchd process serves its metrics on; the dashboard file is what the generator writes
and ships as a ConfigMap the Grafana sidecar loads. Each check is also shown to catch the
mistake it is for.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dispatchd.devtools import dashboard as generator
from tests.deploy.test_policies import selects
from tests.support.manifests import DEPLOY, ROOT, Obj, Render
from tests.support.promql import findings, label_lookup_findings

COMPONENT = DEPLOY / "components" / "observability"
# The overlays that include the component (dev does not: kind has no Prometheus).
OBSERVED = ("staging", "prod", "prod-region-a", "prod-region-b")
SCRAPED_COMPONENTS = {"control-plane", "scheduler", "worker-gateway", "worker"}
SEVERITIES = {"critical", "warning"}
RUNBOOKS = "https://github.com/dispatchd/dispatchd/blob/main/README.md#"


def alert_rules(objects: list[Obj]) -> list[Obj]:
    return [
        rule
        for obj in objects
        if obj["kind"] == "PrometheusRule"
        for group in obj["spec"]["groups"]
        for rule in group["rules"]
    ]


ALERTS = alert_rules(list(yaml.safe_load_all((COMPONENT / "alerts.yaml").read_text())))
DASHBOARD: Obj = json.loads((COMPONENT / "dashboard.json").read_text())


def readme_anchors() -> set[str]:
    """GitHub's anchors for the README's headings."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def alert_findings(rule: Obj, anchors: set[str]) -> list[str]:
    found = findings(str(rule["expr"]))
    if rule.get("labels", {}).get("severity") not in SEVERITIES:
        found.append(f"severity is not one of {sorted(SEVERITIES)}")
    annotations = rule.get("annotations", {})
    found += [f"no {a} annotation" for a in ("summary", "description", "runbook_url") if not annotations.get(a)]
    runbook = annotations.get("runbook_url", "")
    if not runbook.startswith(RUNBOOKS) or runbook.removeprefix(RUNBOOKS) not in anchors:
        found.append(f"runbook {runbook} is not a README section")
    return found


def panel_queries(dashboard: Obj) -> Iterator[tuple[str, str]]:
    """(panel title, expression) for every query a panel runs."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def dashboard_findings(dashboard: Obj) -> list[str]:
    found = [f"{title}: {f}" for title, expr in panel_queries(dashboard) for f in findings(expr)]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found += [f"variable {var['name']}: {f}" for f in label_lookup_findings(var["query"]["query"])]
    return found


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_is_sound(rule: Obj) -> None:
    assert alert_findings(rule, readme_anchors()) == []


def test_dashboard_queries_read_only_exported_metrics() -> None:
    assert len(list(panel_queries(DASHBOARD))) > 20
    assert dashboard_findings(DASHBOARD) == []


PLANTED = "dispatchd_jobs_vanished_total"


def test_a_planted_unknown_metric_is_caught() -> None:
    rule = copy.deepcopy(ALERTS[0])
    rule["expr"] = f"sum(rate({PLANTED}[5m])) > 0"
    assert any(PLANTED in f for f in alert_findings(rule, readme_anchors()))

    dashboard = copy.deepcopy(DASHBOARD)
    dashboard["panels"][-1]["targets"][0]["expr"] = f"sum(increase({PLANTED}[1h]))"
    assert any(PLANTED in f for f in dashboard_findings(dashboard))

    dashboard = copy.deepcopy(DASHBOARD)
    dashboard["templating"]["list"][-1]["query"]["query"] = f"label_values({PLANTED}, job_type)"
    assert any(PLANTED in f for f in dashboard_findings(dashboard))


@pytest.mark.parametrize(
    ("query", "mistake"),
    [
        ("sum(rate(dispatchd_jobs_submitted_total[5m])", "does not parse"),
        ("dispatchd_jobs_submitted_total > 0", "is a counter"),
        ("sum(dispatchd_job_submit_to_claim_seconds_count)", "is a counter"),
        ("max_over_time(dispatchd_store_errors_total[5m])", "is a counter"),
        ("rate(dispatchd_queue_depth[5m])", "is a gauge"),
        ("histogram_quantile(0.5, rate(dispatchd_scheduler_pass_duration_seconds[5m]))", "is a histogram"),
        ("rate(dispatchd_jobs_submitted_total_bucket[5m])", "not an exported metric"),
        ('{__name__="dispatchd_queue_depth"}', "without a name"),
    ],
)
def test_the_query_check_catches_mistakes(query: str, mistake: str) -> None:
    assert any(mistake in f for f in findings(query)), findings(query)


def test_alert_check_catches_missing_parts() -> None:
    rule: dict[str, Any] = copy.deepcopy(ALERTS[0])
    rule["labels"] = {"severity": "page-someone"}
    del rule["annotations"]["summary"]
    rule["annotations"]["runbook_url"] = f"{RUNBOOKS}no-such-section"
    assert len(alert_findings(rule, readme_anchors())) == 3


def test_the_dashboard_file_is_generated() -> None:
    assert (COMPONENT / "dashboard.json").read_text() == generator.render(), (
        "run `python -m dispatchd.devtools.dashboard` and commit the result"
    )


# --------------------------------------------------------------------------- rendered overlays


def scrape_gaps(render: Render) -> list[str]:
    """Every dispatchd process is selected by a PodMonitor whose port it names, on the port
    its DISPATCHD_METRICS_LISTEN serves."""
    monitors = render.kind("PodMonitor")
    found = []
    for deployment in render.kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") not in SCRAPED_COMPONENTS:
            continue
        where = f"Deployment/{deployment['metadata']['name']}"
        ports = [
            endpoint["port"]
            for monitor in monitors
            if selects(monitor["spec"]["selector"], labels)
            for endpoint in monitor["spec"]["podMetricsEndpoints"]
        ]
        if not ports:
            found.append(f"{where}: no PodMonitor selects it")
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
            listen = env.get("DISPATCHD_METRICS_LISTEN", render.config.get("DISPATCHD_METRICS_LISTEN", ""))
            for port in ports:
                if port not in named:
                    found.append(f"{where}: container {container['name']} has no port named {port}")
                elif not listen.endswith(f":{named[port]}"):
                    found.append(f"{where}: port {port} is {named[port]} but metrics listen on {listen or 'nothing'}")
    return found


@pytest.mark.parametrize("overlay", OBSERVED)
def test_every_process_is_scraped(renders: dict[str, Render], overlay: str) -> None:
    assert scrape_gaps(renders[overlay]) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["ports"].pop(),
        lambda c: c["env"].append({"name": "DISPATCHD_METRICS_LISTEN", "value": "0.0.0.0:9999"}),
        lambda c: c["env"].append({"name": "DISPATCHD_METRICS_LISTEN", "value": ""}),
    ],
    ids=["port-removed", "listen-elsewhere", "metrics-off"],
)
def test_scrape_gaps_are_caught(renders: dict[str, Render], mutate: Any) -> None:
    objects = copy.deepcopy(renders["staging"].objects)
    scheduler = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "dispatchd-scheduler")
    container = scheduler["spec"]["template"]["spec"]["containers"][0]
    # The services take DISPATCHD_METRICS_LISTEN from the shared ConfigMap; an env entry overrides it.
    assert container["ports"][-1]["name"] == "metrics"
    assert "DISPATCHD_METRICS_LISTEN" not in {e["name"] for e in container["env"]}
    mutate(container)
    assert scrape_gaps(Render("staging-broken", objects))


@pytest.mark.parametrize("overlay", OBSERVED)
def test_overlays_ship_the_alerts_and_the_dashboard(renders: dict[str, Render], overlay: str) -> None:
    render = renders[overlay]
    shipped = {rule["alert"] for rule in alert_rules(render.objects)}
    expected = {rule["alert"] for rule in ALERTS}
    if overlay == "prod-region-b":  # passive: its schedulers never lead
        expected.discard("DispatchdNoSchedulerLeader")
    assert shipped == expected
    config_map = render.one("ConfigMap", "dispatchd-dashboard")
    assert config_map["metadata"]["name"] == "dispatchd-dashboard", "no hash suffix: one copy per uid"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["dispatchd.json"]) == DASHBOARD


def test_dev_has_no_monitoring(renders: dict[str, Render]) -> None:
    assert not renders["dev"].kind("PodMonitor") and not alert_rules(renders["dev"].objects)
