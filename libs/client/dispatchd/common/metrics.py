"""Prometheus exposition for every dispatchd process: the `/metrics` HTTP port and `dispatchd_build_info`.

Invariant: metrics live in prometheus-client's default registry and are always counted;
`serve_metrics` only decides whether anyone can read them. An empty listen address means no
port at all (the default outside Kubernetes), so counting costs the same either way. The
port is served by prometheus-client's own HTTP server on a daemon thread: a scrape never
runs on a service's event loop. Service metrics are in `dispatchd.platform.metrics`, the
worker process's in `dispatchd.sdk.metrics`; names follow the README's Metrics table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from importlib import metadata
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import Gauge, start_http_server

log = logging.getLogger("dispatchd.metrics")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

BUILD_INFO = Gauge("dispatchd_build_info", "Always 1; the labels say what runs.", ["version", "service"])


class Bound(Generic[K, T]):
    """Label children (or bundles of them) made once per key, e.g. a job type: the hot path only looks them up."""

    __slots__ = ("_bound", "_make")

    def __init__(self, make: Callable[[K], T]) -> None:
        self._make = make
        self._bound: dict[K, T] = {}

    def __call__(self, key: K) -> T:
        found = self._bound.get(key)
        if found is None:
            found = self._bound[key] = self._make(key)
        return found


class MetricsListenError(ValueError):
    """The metrics listen address is not `host:port`."""


def parse_listen(listen: str) -> tuple[str, int] | None:
    """`host:port` (IPv6 hosts in brackets) as (host, port); None for an empty address (metrics off)."""
    listen = listen.strip()
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsListenError(f"metrics listen address must be host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def version() -> str:
    try:
        return metadata.version("dispatchd-client")
    except metadata.PackageNotFoundError:  # running from a source tree without the distribution
        return "unknown"


@dataclass
class MetricsServer:
    """A running `/metrics` port; `port` is the bound one (useful when asked for port 0)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(listen: str, service: str) -> MetricsServer | None:
    """Record the build info of `service` and serve `/metrics` on `listen` (empty: not served).

    Raises OSError when the address cannot be bound, so a misconfigured port fails the start.
    """
    BUILD_INFO.labels(version=version(), service=service).set(1)
    address = parse_listen(listen)
    if address is None:
        return None
    host, port = address
    server, thread = start_http_server(port, addr=host)
    running = MetricsServer(server, thread)
    log.info("metrics on http://%s:%d/metrics", host, running.port, extra={"fields": {"metrics_listen": listen}})
    return running
