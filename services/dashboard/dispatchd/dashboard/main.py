"""Dashboard process: the web pages on `DISPATCHD_DASHBOARD_LISTEN`, gRPC health on `DISPATCHD_HEALTH_LISTEN`.

Invariant: like the services, `--help` reads no setting and touches no network; the process
holds one gRPC channel to the control plane (TLS and client certificate from DISPATCHD_CA /
CERT / KEY, never a token of its own) and its health is SERVING exactly while the control
plane answers its own health check; SIGTERM flips health first, then stops serving.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from dispatchd.client import AsyncClient
from dispatchd.common import loops
from dispatchd.common.observability import configure_logging, stop_logging
from dispatchd.common.security import ClientSecurity, CredentialsError
from dispatchd.dashboard import (
    callers,
    cluster,
    csrf,
    dead_letters,
    errors,
    jobs,
    keys,
    live,
    login,
    overview,
    rendering,
    schedules,
    workflows,
)
from dispatchd.dashboard.health import NOT_SERVING, follow_control_plane
from dispatchd.dashboard.settings import DashboardSettings, load
from dispatchd.platform.health import HealthServicer
from dispatchd.platform.security.serving import start_health_server

log = logging.getLogger("dispatchd.dashboard")

STATIC = Path(__file__).parent / "static"


def make_app(settings: DashboardSettings, client: AsyncClient) -> web.Application:
    # Outermost first: headers on everything, then who calls, CSRF before any handler, then errors.
    app = web.Application(
        middlewares=[
            rendering.headers_middleware,
            callers.callers_middleware,
            csrf.csrf_middleware,
            errors.errors_middleware,
        ]
    )
    app[keys.SETTINGS] = settings
    app[keys.CLIENT] = client
    app[keys.PAGES] = rendering.Pages()
    app[keys.CSRF] = csrf.CsrfGuard.from_file(settings.secret_file)
    for module in (overview, jobs, dead_letters, workflows, schedules, cluster, live, login):
        app.router.add_routes(module.routes)
    app.router.add_static("/static", STATIC, append_version=False)
    return app


def channel_security() -> ClientSecurity:
    """TLS material from the environment; any DISPATCHD_TOKEN(_FILE) is ignored on purpose."""
    base = ClientSecurity.from_env()
    return ClientSecurity(ca=base.ca, cert=base.cert, key=base.key, server_name=base.server_name)


async def serve(settings: DashboardSettings) -> None:
    configure_logging("dashboard", settings.log_level, settings.log_json)
    try:
        security = channel_security()
        app = make_app(settings, AsyncClient(settings.control_plane_target, security=security))
        health_channel = security.aio_channel(settings.control_plane_target)
    except (CredentialsError, OSError, ValueError) as exc:  # unreadable TLS files or CSRF key
        raise SystemExit(f"dashboard: {exc}") from None
    servicer = HealthServicer()
    await servicer.set("", NOT_SERVING)
    probes = await start_health_server(settings.health_listen, servicer)
    runner = web.AppRunner(app, access_log_format="%r %s %b %Tfs")
    await runner.setup()
    try:
        await web.TCPSite(runner, *settings.address()).start()
    except OSError as exc:
        raise SystemExit(f"dashboard: cannot listen on {settings.listen}: {exc.strerror}") from None
    log.info("dashboard listening on http://%s/ (control plane %s)", settings.listen, settings.control_plane_target)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    watcher = asyncio.create_task(follow_control_plane(health_channel, servicer))
    await stopping.wait()
    log.info("dashboard shutting down")
    await servicer.enter_graceful_shutdown()
    await runner.cleanup()  # ends open event streams too
    watcher.cancel()
    await asyncio.wait({watcher})
    if probes is not None:
        await probes.stop(None)
    await health_channel.close(None)
    await app[keys.CLIENT].close()
    log.info("dashboard stopped")


def environment_help() -> str:
    lines = ['configuration (environment variables; README "Web dashboard"):']
    for name, info in DashboardSettings.model_fields.items():
        alias = info.validation_alias
        variable = getattr(alias, "choices", [f"DISPATCHD_DASHBOARD_{name.upper()}"])[0]
        lines.append(f"  {variable}  (default {info.default!r})\n      {info.description or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dispatchd-dashboard",
        description=__doc__.split("\n")[0] if __doc__ else None,
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        loops.run(serve(load()))
    finally:
        stop_logging()


if __name__ == "__main__":
    main()
