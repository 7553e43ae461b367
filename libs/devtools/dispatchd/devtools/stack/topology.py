"""What a stack consists of: which services, how many of each, which stores, which settings.

A `Topology` is plain data (frozen): the same value always describes the same platform,
whoever launches it (`make up`, perf drills, chaos, the tests). Process names follow one
rule: a service kind with one instance is called by its kind ("control-plane",
"scheduler"), several are numbered ("scheduler-1", "scheduler-2"); workers are always
numbered within their group ("worker-1").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dispatchd.common.security import ClientSecurity

CONTROL_PLANE = "control-plane"
GATEWAY = "worker-gateway"
SCHEDULER = "scheduler"


class Security(Protocol):
    """Trust material of a secured stack (auth + TLS + client certificates)."""

    def server_env(self) -> dict[str, str]:
        """DISPATCHD_* settings turning security on in every service."""
        ...

    def cli(self) -> ClientSecurity:
        """How an administrator's client reaches the services."""
        ...

    def worker_args(self, worker_id: str) -> list[str]:
        """Worker command-line options (token, CA, certificate) for `worker_id`."""
        ...


@dataclass(frozen=True)
class Service:
    """One kind of service: how to run it and which setting carries its listen address."""

    kind: str
    module: str
    listen_variable: str


SERVICES = (
    Service(CONTROL_PLANE, "dispatchd.control_plane.main", "DISPATCHD_CONTROL_PLANE_LISTEN"),
    Service(GATEWAY, "dispatchd.worker_gateway.main", "DISPATCHD_GATEWAY_LISTEN"),
    Service(SCHEDULER, "dispatchd.scheduler.main", "DISPATCHD_SCHEDULER_LISTEN"),
)
SERVICE_BY_KIND = {service.kind: service for service in SERVICES}


@dataclass(frozen=True)
class Workers:
    """A group of identical workers (`dispatchd.sdk.cli`), named `<prefix>-1`... and spread over the gateways."""

    count: int = 1
    args: tuple[str, ...] = ("--builtins",)  # which handlers, e.g. ("--handlers", "mod:register")
    concurrency: int | None = None
    heartbeat_seconds: float | None = None
    grace_seconds: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: str = "worker"


@dataclass(frozen=True)
class Stores:
    """Given URLs are used as they are; a missing one gets a private server under the stack's directory.

    `fallback`: a given URL that does not answer is replaced by a private server (what
    `make up` does with DATABASE_URL/REDIS_URL) instead of being used anyway.
    """

    database_url: str | None = None
    redis_url: str | None = None
    fallback: bool = False
    pg_port: int | None = None  # None: any free port
    redis_port: int | None = None
    fast_postgres: bool = True  # fsync off: survives killing postgres, not an OS crash
    persist_redis: bool = False
    keep_data: bool = False  # stop (not delete) private servers' data at the end
    migrate: bool = True


@dataclass(frozen=True)
class Topology:
    control_planes: int = 1
    gateways: int = 1
    schedulers: int = 2
    workers: tuple[Workers, ...] = (Workers(),)
    stores: Stores = Stores()
    security: Security | None = None
    # A plaintext health-only port per service (DISPATCHD_HEALTH_LISTEN): readiness without credentials.
    health_ports: bool = False
    # A Prometheus metrics port per service and worker (`process.metrics_url`); False: none.
    metrics: bool = True
    listen: Mapping[str, str] = field(default_factory=dict)  # fixed addresses by process name
    redis_prefix: str | None = None
    # The web dashboard (dispatchd.dashboard) as one more process; `listen["dashboard"]` fixes its address.
    dashboard: bool = False
    # Settings for every process (DISPATCHD_*, region, log level...), applied last.
    settings: Mapping[str, str] = field(default_factory=dict)

    def count(self, service: Service) -> int:
        return {CONTROL_PLANE: self.control_planes, GATEWAY: self.gateways, SCHEDULER: self.schedulers}[service.kind]

    def service_names(self) -> list[tuple[str, Service]]:
        """(process name, service) in start order."""
        return [(name, service) for service in SERVICES for name in instance_names(service.kind, self.count(service))]

    def worker_names(self) -> list[tuple[str, Workers]]:
        return [(f"{group.prefix}-{i}", group) for group in self.workers for i in range(1, group.count + 1)]


def instance_names(kind: str, count: int) -> list[str]:
    return [kind] if count == 1 else [f"{kind}-{i}" for i in range(1, count + 1)]


def kind_of(name: str) -> str:
    """`worker-2` -> `worker`, `scheduler-1` -> `scheduler`; unnumbered names are their kind."""
    base, _, number = name.rpartition("-")
    return base if number.isdigit() else name
