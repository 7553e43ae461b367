"""The web dashboard (dispatchd.dashboard) as a ServiceProcess of a stack.

Invariant: it gets only what a client gets, the control plane's address and the channel's TLS
files (never the stack's admin token nor a store URL), so a stack proves that the dashboard
works through gRPC alone; it is healthy once its gRPC health port says SERVING, which it does
while the control plane does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dispatchd.common.security import ENV, ClientSecurity
from dispatchd.devtools.stack.process import ServiceProcess, python_module_argv
from dispatchd.devtools.stack.service import free_listen

NAME = "dashboard"
MODULE = "dispatchd.dashboard"


def dashboard_process(
    control_plane: str,
    security: ClientSecurity,
    log_dir: Path,
    *,
    listen: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """The dashboard on `listen` (default: a free port) for `control_plane`, not started yet."""
    listen = listen or free_listen()
    health = free_listen()
    tls = {"ca": security.ca, "cert": security.cert, "key": security.key, "server_name": security.server_name}
    env = {
        **(settings or {}),
        "DISPATCHD_CONTROL_PLANE_TARGET": control_plane,
        "DISPATCHD_DASHBOARD_LISTEN": listen,
        "DISPATCHD_HEALTH_LISTEN": health,
        # Blank, not absent: a token in the launcher's own environment must not reach it.
        ENV["token"]: "",
        ENV["token_file"]: "",
        **{ENV[name]: str(value) if value else "" for name, value in tls.items()},
    }
    return ServiceProcess(NAME, python_module_argv(MODULE), env, log_dir, listen=listen, health=health)


def url_of(process: ServiceProcess) -> str:
    return f"http://{process.listen}/"
