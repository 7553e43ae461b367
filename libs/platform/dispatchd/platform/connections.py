"""How long a service keeps a client connection, and which client pings it tolerates.

Invariant: every connection ends within `max_connection_age` (±10% jitter, gRPC's) plus its
grace, so a client of a Service with several replicas reconnects, re-resolves the name and
spreads (round_robin, dispatchd.common.channels) — without it a long-lived HTTP/2 client
stays on the pod it first reached, and a rollout never rebalances. The ping limit is the
counterpart of the clients' keepalive (dispatchd.common.channels.KEEPALIVE_TIME_MS): it must
stay below it, or a client's pings earn GOAWAY `too_many_pings`.
"""

from __future__ import annotations

from typing import Any

from dispatchd.platform.config import Settings


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.keepalive_min_ping_seconds)),
        # Clients ping only while a call is open; allowing idle pings as well costs nothing.
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if settings.max_connection_age_seconds > 0:
        options.append(("grpc.max_connection_age_ms", _ms(settings.max_connection_age_seconds)))
        # Unset, gRPC's grace is unlimited: calls open at the GOAWAY run until they end.
        if settings.max_connection_age_grace_seconds > 0:
            options.append(("grpc.max_connection_age_grace_ms", _ms(settings.max_connection_age_grace_seconds)))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
