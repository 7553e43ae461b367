"""The command line of a service process (control plane, scheduler, worker gateway).

Invariant: the environment configures a service (dispatchd.platform.config), the command line
only asks about it: `--help` prints usage and the settings that matter first, then exits 0
without reading a setting or touching the network; anything else on the command line is a
usage error (exit 2). Only then does the service start.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence

from pydantic import AliasChoices

from dispatchd.platform import server
from dispatchd.platform.config import Settings, get_settings

# Besides the service's own listen address: what an operator sets first.
KEY_SETTINGS = ("database_url", "redis_url", "health_listen", "metrics_listen", "log_level")


def variable(field: str) -> str:
    """The environment variable that sets `field` (its first alias, else DISPATCHD_<FIELD>)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"DISPATCHD_{field.upper()}"


def environment_help(listen_field: str) -> str:
    lines = ["configuration (environment variables; README \"Configuration\" lists every one):"]
    for field in (listen_field, *KEY_SETTINGS):
        info = Settings.model_fields[field]
        lines.append(f"  {variable(field)}  (default {info.default!r})\n      {info.description}")
    return "\n".join(lines)


def service_main(
    name: str,
    description: str | None,
    listen_field: str,
    build: Callable[[server.Runtime], Awaitable[server.Service]],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line (`--help` only), then serve `name` on the address in `listen_field`."""
    parser = argparse.ArgumentParser(
        prog=f"dispatchd-{name}",
        description=description,
        epilog=environment_help(listen_field),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = get_settings()
    server.run(server.serve(name, settings, getattr(settings, listen_field), build))
