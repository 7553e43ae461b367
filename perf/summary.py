"""The one table `make perf-smoke` / `make perf-compare` print at the end, built from the evidence alone.

Invariant: every cell is read from the evidence dictionary that is written to disk (so the
table and the file cannot disagree); a phase that was skipped or failed shows why instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dispatchd.devtools.stack import kind_of

HEADER = ("measurement", "rate", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "CPU ms/job")
CPU_COLUMNS = (("control-plane", "cp"), ("worker-gateway", "gw"), ("worker", "wk"))


def _ms(figures: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return tuple(str(figures.get(k, "-")) for k in ("p50", "p90", "p99", "max"))  # type: ignore[return-value]


def cpu_cell(per_job: Mapping[str, float]) -> str:
    """Control plane / gateway / workers (summed over worker processes, replicas too) CPU ms per job."""
    parts = []
    for prefix, short in CPU_COLUMNS:
        values = [v for name, v in per_job.items() if kind_of(name) == prefix]
        if values:
            parts.append(f"{short} {sum(values):.2f}")
    return " ".join(parts) or "-"


def _errors(phase: Mapping[str, Any]) -> str:
    count = sum(phase.get("errors", {}).values()) + phase.get("unfinished", 0) + phase.get("not_succeeded", 0)
    return str(count)


def e2e_rows(label: str, phase: Mapping[str, Any]) -> list[tuple[str, ...]]:
    if "skipped" in phase or "failed" in phase:
        return [(label, phase.get("skipped") or phase["failed"], "", "", "", "", "", "")]
    cpu = cpu_cell(phase.get("cpu_ms_per_job", {}))
    if phase["phase"] == "bulk":  # jobs accepted per second; the latency is the calls' (one job or a batch each)
        calls = _ms(phase.get("call_latency_ms", {}))
        return [(label + " enqueue", f"{phase['accepted_per_second']}/s", *calls, _errors(phase), cpu)]
    if phase["phase"] == "saturation":
        rate = f"{phase['throughput']['jobs_per_second']} jobs/s"
    else:
        rate = f"{phase['offered_rate']:g}/s offered"
    found: list[tuple[str, ...]] = [(label, rate, "", "", "", "", _errors(phase), cpu)]
    for leg in ("claim", "handler_start", "handler_done", "recorded"):
        figures = phase.get(f"submit_to_{leg}_ms", {})
        if figures.get("count"):
            found.append((f"  submit -> {leg.replace('_', ' ')}", "", *_ms(figures), "", ""))
    return found


def rows(evidence: Mapping[str, Any]) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    locust = evidence.get("locust")
    if locust and "failed" not in locust:
        for name, figures in {"all": locust["aggregated"], **locust["by_method"]}.items():
            found.append((f"locust {name}", f"{figures['per_second']}/s", *_ms(figures), str(figures["failures"]), ""))
    elif locust:
        found.append(("locust", locust["failed"], "", "", "", "", "", ""))
    load = evidence.get("worker_load")
    if load and "failed" not in load:
        errors = str(sum(load["errors"].values()))
        found.append((f"heartbeat -> ack ({load['registered']} streams)", f"{load['heartbeats_per_second']}/s",
                      *_ms(load["heartbeat_ack_ms"]), errors, ""))  # fmt: skip
        found.append(("  registration", f"all in {load['all_registered_seconds']}s", *_ms(load["registration_ms"]),
                      "", ""))  # fmt: skip
    elif load:
        found.append(("worker load", load["failed"], "", "", "", "", "", ""))
    for key, phase in evidence.get("end_to_end", {}).items():
        found.extend(e2e_rows(key, phase))
    return found


def render(table: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(out)
