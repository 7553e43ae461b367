"""The one interface every drill uses to act on the platform, wherever it runs.

A drill stops, starts, scales and reaches components and runs commands next to them only
through `Platform`, so the same drill runs against local processes (`local.LocalPlatform`,
on dispatchd.devtools.stack.Stack) and against Kubernetes (`kubernetes.KubernetesPlatform`).

Component names: "control-plane", "worker-gateway", "scheduler", "worker", "postgres",
"redis", optionally with a "#N" suffix naming one replica by its 0-based ordinal (the
StatefulSet pod ordinal in Kubernetes; locally the N+1-th process of that kind, e.g.
"scheduler#1" is the stack's "scheduler-2"). Without a suffix, `stop`/`start` act on every
replica of the component and `exec`/`address` on replica #0.

Invariant: every method either did what it says (the component is down / healthy / at that
many replicas / the command exited 0) or raises; a drill never has to double-check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CONTROL_PLANE = "control-plane"
WORKER_GATEWAY = "worker-gateway"
SCHEDULER = "scheduler"
WORKER = "worker"
POSTGRES = "postgres"
REDIS = "redis"
COMPONENTS = (CONTROL_PLANE, WORKER_GATEWAY, SCHEDULER, WORKER, POSTGRES, REDIS)


class Platform(Protocol):
    async def stop(self, component: str, *, hard: bool = True) -> None:
        """SIGKILL / pod delete (grace 0) when hard, SIGTERM / scale-to-0 otherwise."""
        ...

    async def start(self, component: str) -> None:
        """(Re)start it and wait until it is healthy (serving, connected, accepting connections)."""
        ...

    async def scale(self, component: str, replicas: int) -> None:
        """Run exactly `replicas` replicas of `component` (no "#N" suffix)."""
        ...

    async def exec(self, component: str, argv: Sequence[str]) -> bytes:
        """Run `argv` in (Kubernetes) or next to (local) the component; its stdout. Raises on non-zero exit."""
        ...

    def address(self, component: str, port: str = "grpc") -> str:
        """host:port of that port reachable from the drill (a port-forward in Kubernetes).

        Ports: "grpc" and "metrics" for services; Postgres and Redis have one port each,
        returned whatever `port` says.
        """
        ...


def split(component: str) -> tuple[str, int | None]:
    """ "scheduler#1" -> ("scheduler", 1); "scheduler" -> ("scheduler", None). Raises on unknown kinds."""
    kind, sep, ordinal = component.partition("#")
    if kind not in COMPONENTS or (sep and not ordinal.isdigit()):
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS} with an optional #N")
    return kind, int(ordinal) if sep else None
