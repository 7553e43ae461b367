"""The options of every gRPC channel our clients open (SDK, CLI, `dispatchd.client`, services).

Invariant: one place decides how a client spreads its calls and keeps its connections, so
every client agrees with the servers' connection limits (dispatchd.platform.server):

- `round_robin`: a target that resolves to several addresses (`dns:///<headless Service>`,
  `ipv4:a:p1,b:p2`) gets a subchannel per address and calls rotate over them; gRPC's default
  (`pick_first`) would pin every call to the first address.
- keepalive pings every `KEEPALIVE_TIME_MS` (≥ the server's minimum ping interval, or the
  server answers with GOAWAY `too_many_pings`), only while calls are open: an idle channel
  sends nothing, so it cannot collect ping strikes either.
- reconnect backoff short: the callers pace their own retries (a `Profile` per kind of caller).
- a target whose every address is on this machine's loopback bypasses any proxy from the
  environment, which could never reach it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The server refuses pings closer than 30 s (DISPATCHD_KEEPALIVE_MIN_PING_SECONDS); we ping at 60 s.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_SCHEMES = ("dns:///", "dns:", "ipv4:", "ipv6:")


@dataclass(frozen=True)
class Profile:
    """How fast gRPC itself reconnects a lost subchannel, per kind of caller."""

    initial_reconnect_ms: int
    max_reconnect_ms: int


# Unary calls: our retries (dispatchd.client._retry) pace the reconnects; gRPC's own backoff
# (up to 120 s) would outlast them.
CALLS = Profile(initial_reconnect_ms=100, max_reconnect_ms=2000)
# A worker's stream: the worker reconnects on its own schedule.
STREAM = Profile(initial_reconnect_ms=200, max_reconnect_ms=5000)


def options(target: str, profile: Profile = CALLS) -> list[tuple[str, Any]]:
    """Channel options for `target`; credentials' own options are added by ClientSecurity."""
    opts: list[tuple[str, Any]] = [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.initial_reconnect_backoff_ms", profile.initial_reconnect_ms),
        ("grpc.min_reconnect_backoff_ms", profile.initial_reconnect_ms),
        ("grpc.max_reconnect_backoff_ms", profile.max_reconnect_ms),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if is_loopback(target):
        opts.append(("grpc.enable_http_proxy", 0))
    return opts


def hosts(target: str) -> list[str]:
    """The hosts a target names: `h:p`, `dns:///h:p`, `dns://authority/h:p`, `ipv4:a:p,b:p`, `[::1]:p`."""
    rest = target
    if rest.startswith("dns://") and not rest.startswith("dns:///"):
        rest = "dns:///" + rest[len("dns://") :].split("/", 1)[-1]
    for scheme in _SCHEMES:
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    return [_host(address) for address in rest.split(",") if address]


def is_loopback(target: str) -> bool:
    names = hosts(target)
    return bool(names) and all(name.lower() in _LOOPBACK_HOSTS or name.startswith("127.") for name in names)


def _host(address: str) -> str:
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address
