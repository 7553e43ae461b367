"""A dispatchd service (control plane, worker gateway, scheduler) as a ServiceProcess, on an address of its own.

Stacks build every service through `service_process`, and so do tests that need one service
alone: the module to run and the setting that carries its listen address come from one table
(topology.SERVICES).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools.stack.process import ServiceProcess, python_module_argv
from dispatchd.devtools.stack.topology import SERVICE_BY_KIND
from dispatchd.devtools.stores import free_port


def free_listen() -> str:
    """A 127.0.0.1 address whose port was free a moment ago."""
    return f"127.0.0.1:{free_port()}"


def service_process(
    kind: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str | None = None,
    listen: str | None = None,
    health: str | None = None,
    security: ClientSecurity | None = None,
    metrics: str | None = None,
) -> ServiceProcess:
    """Service `kind` listening on `listen` (default: a free port), not started yet.

    `health`: a separate plaintext health port (set as DISPATCHD_HEALTH_LISTEN), checked
    instead of `listen`; `security`: how to reach `listen` for health checks otherwise;
    `metrics`: where it serves Prometheus metrics (DISPATCHD_METRICS_LISTEN).
    """
    service = SERVICE_BY_KIND[kind]
    listen = listen or free_listen()
    process_env = {**env, service.listen_variable: listen}
    if health is not None:
        process_env["DISPATCHD_HEALTH_LISTEN"] = health
        security = None
    if metrics is not None:
        process_env["DISPATCHD_METRICS_LISTEN"] = metrics
    return ServiceProcess(
        name or kind,
        python_module_argv(service.module),
        process_env,
        log_dir,
        listen=listen,
        health=health,
        security=security,
        metrics=metrics,
    )
