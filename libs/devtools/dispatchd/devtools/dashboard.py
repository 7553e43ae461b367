"""The Grafana dashboard of deploy/components/observability, written as code.

Invariant: deploy/components/observability/dashboard.json is exactly `render()` (a test in
tests/deploy fails on drift, and checks that every query reads only exported metrics).
`python -m dispatchd.devtools.dashboard [path]` rewrites the file after a change here.

Panels are tables of (expression, legend) pairs; the layout (two panels a row under a row
header per section), the datasource variable and the filters are applied in one place.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
DEFAULT_PATH = Path("deploy/components/observability/dashboard.json")

RATE = "$__rate_interval"
SERVICE = 'service=~"$service"'
JOB_TYPE = 'job_type=~"$job_type"'
# Server faults; client mistakes and client deadlines are not errors of the service.
SERVER_ERRORS = 'code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS"'
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}

Target = tuple[str, str]  # (PromQL expression, legend format)


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]
    description: str = ""


def rate(metric: str, by: str, where: str = "") -> str:
    """Per-second rate of a counter, summed by the given labels."""
    selector = f"{metric}{{{where}}}" if where else metric
    return f"sum by ({by}) (rate({selector}[{RATE}]))"


def legend(by: str) -> str:
    return " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())


def quantiles(histogram: str, by: str = "", where: str = "") -> tuple[Target, ...]:
    """p50 and p99 of a histogram, per the given labels."""
    labels = f"le, {by}" if by else "le"
    return tuple(
        (
            f"histogram_quantile({q}, {rate(f'{histogram}_bucket', labels, where)})",
            f"p{round(q * 100)} {legend(by)}".strip(),
        )
        for q in (0.5, 0.99)
    )


REQUESTS = "dispatchd_grpc_server_requests_total"

SERVICES = (
    Panel("Requests per second", "reqps", ((rate(REQUESTS, "service, method", SERVICE), legend("service, method")),)),
    Panel(
        "Server error ratio",
        "percentunit",
        (
            (
                f"{rate(REQUESTS, 'service, method', f'{SERVICE}, {SERVER_ERRORS}')}"
                f" / {rate(REQUESTS, 'service, method', SERVICE)}",
                legend("service, method"),
            ),
        ),
        "Share of calls ending UNKNOWN, INTERNAL, UNAVAILABLE or DATA_LOSS.",
    ),
    Panel("Responses by code", "reqps", ((rate(REQUESTS, "service, code", SERVICE), legend("service, code")),)),
    Panel(
        "Unary latency",
        "s",
        quantiles("dispatchd_grpc_server_request_duration_seconds", "service, method", SERVICE),
        "Streams are not observed here.",
    ),
    Panel(
        "Worker streams and free slots",
        "short",
        (
            ("sum(dispatchd_worker_streams)", "worker streams"),
            ("sum(dispatchd_worker_free_slots)", "free slots"),
            ("sum by (method) (dispatchd_grpc_server_streams)", "open {{method}}"),
        ),
        "Saturation: registered workers on the gateways and the slots they have free.",
    ),
    Panel("Executions in flight per worker pod", "short", (("sum by (pod) (dispatchd_worker_inflight)", "{{pod}}"),)),
    Panel(
        "Store errors per second",
        "ops",
        ((rate("dispatchd_store_errors_total", "service, store", SERVICE), legend("service, store")),),
    ),
    Panel(
        "Targets up and versions",
        "short",
        (
            ('sum by (job) (up{job=~"dispatchd-.+"})', "{{job}} up"),
            ("count by (service, version) (dispatchd_build_info)", "{{service}} {{version}}"),
        ),
    ),
)

PIPELINE = (
    Panel(
        "Jobs submitted and finished per second",
        "ops",
        (
            (rate("dispatchd_jobs_submitted_total", "job_type", JOB_TYPE), "submitted {{job_type}}"),
            (rate("dispatchd_jobs_finished_total", "job_type, outcome", JOB_TYPE), "{{outcome}} {{job_type}}"),
        ),
    ),
    Panel(
        "Retries, dead letters, redrives and cancels per second",
        "ops",
        tuple(
            (rate(f"dispatchd_jobs_{event}_total", "job_type", JOB_TYPE), f"{event} {{{{job_type}}}}")
            for event in ("retried", "dead_lettered", "redriven", "cancelled")
        ),
    ),
    Panel(
        "Ready-queue depth", "short", ((f"max by (job_type) (dispatchd_queue_depth{{{JOB_TYPE}}})", "{{job_type}}"),)
    ),
    Panel(
        "Oldest due job",
        "s",
        ((f"max by (job_type) (dispatchd_queue_oldest_due_age_seconds{{{JOB_TYPE}}})", "{{job_type}}"),),
    ),
    Panel("Submit to claim latency", "s", quantiles("dispatchd_job_submit_to_claim_seconds", "job_type", JOB_TYPE)),
    Panel(
        "Submit to terminal latency",
        "s",
        quantiles("dispatchd_job_submit_to_terminal_seconds", "job_type, outcome", JOB_TYPE),
    ),
    Panel(
        "Worker executions per second",
        "ops",
        ((rate("dispatchd_worker_executions_total", "job_type, outcome", JOB_TYPE), "{{outcome}} {{job_type}}"),),
    ),
    Panel(
        "Worker execution duration", "s", quantiles("dispatchd_worker_execution_duration_seconds", "job_type", JOB_TYPE)
    ),
)

SCHEDULER = (
    Panel(
        "Leader by pod",
        "short",
        (("sum by (pod) (dispatchd_scheduler_is_leader)", "{{pod}}"),),
        "Exactly one scheduler should lead (none in a passive region).",
    ),
    Panel(
        "Epoch and takeovers",
        "short",
        (
            ("max(dispatchd_scheduler_epoch)", "epoch"),
            ("sum(increase(dispatchd_scheduler_takeovers_total[1h]))", "takeovers in the last hour"),
        ),
    ),
    Panel("Repairs per second by kind", "ops", ((rate("dispatchd_scheduler_repairs_total", "kind"), "{{kind}}"),)),
    Panel("Scheduler pass duration", "s", quantiles("dispatchd_scheduler_pass_duration_seconds")),
    Panel(
        "Schedule fires per second by outcome",
        "ops",
        (
            (rate("dispatchd_schedule_fires_total", "outcome"), "{{outcome}}"),
            (f"sum(rate(dispatchd_schedule_fires_dropped_total[{RATE}]))", "dropped (catch-up policy)"),
        ),
        "What each recorded fire time started; `error`: its workflow could not start.",
    ),
    Panel(
        "Lease expiries, timeouts, requeues and stale results per second",
        "ops",
        tuple(
            (f"sum(rate(dispatchd_{name}_total[{RATE}]))", name.replace("_", " "))
            for name in ("lease_expiries", "execution_timeouts", "stream_close_requeues", "stale_results")
        ),
    ),
)

SECTIONS = (
    ("Services: traffic, errors, latency, saturation", SERVICES),
    ("Job pipeline", PIPELINE),
    ("Scheduler", SCHEDULER),
)


def variable(name: str, label: str, metric: str) -> JSON:
    """A multi-value filter listing the values `metric` carries for the label `name`."""
    query = f"label_values({metric}, {name})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": fmt}
            for i, (expr, fmt) in enumerate(panel.targets)
        ],
    }


def panels() -> list[JSON]:
    """Each section under its row header, two panels a row."""
    out: list[JSON] = []
    y = 0
    for title, section in SECTIONS:
        out.append(
            {
                "id": len(out) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        y += 1
        for i, panel in enumerate(section):
            out.append(panel_json(panel, len(out) + 1, 12 * (i % 2), y + 8 * (i // 2)))
        y += 8 * ((len(section) + 1) // 2)
    return out


def dashboard() -> JSON:
    return {
        "uid": "dispatchd-overview",
        "title": "dispatchd",
        "description": "Golden signals per service and the job pipeline (README: Dashboard).",
        "tags": ["dispatchd"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "current": {},
                },
                variable("service", "Service", "dispatchd_build_info"),
                variable("job_type", "Job type", "dispatchd_jobs_submitted_total"),
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
