"""Where each drill component lives in a cluster deployed from deploy/: its workload, pods and ports.

Every object in deploy/ carries app.kubernetes.io/name=dispatchd and
app.kubernetes.io/component=<component>, and each component is one workload named
dispatchd-<component> whose first container is the component itself; that is the whole
mapping. Postgres is a StatefulSet (deploy/components/in-cluster-datastores), the rest are
Deployments. A "#N" replica is the StatefulSet pod with ordinal N, or for a Deployment (whose
pods have random names) the N-th of its live pods in name order.

Invariant: pure functions of names and pod listings, no cluster access, so they are tested
here: tests/unit/test_drill_workloads.py, and against the rendered manifests they describe
in tests/deploy/test_drill_components.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dispatchd.devtools.drills.platform import POSTGRES, REDIS, split

NAME_LABEL = "app.kubernetes.io/name=dispatchd"

# Container ports by the Service port names the drills ask for (deploy/base, deploy/components).
PORTS: dict[str, dict[str, int]] = {
    "control-plane": {"grpc": 50051, "metrics": 9464},
    "worker-gateway": {"grpc": 50052, "metrics": 9464},
    "scheduler": {"grpc": 50053, "metrics": 9464},
    "worker": {"metrics": 9464},
    POSTGRES: {"postgres": 5432},
    REDIS: {"redis": 6379},
}

# Commands run in the datastore containers see the same client settings as LocalPlatform's:
# libpq's PG* for Postgres (the dev overlay's superuser and database), REDIS_URL for Redis
# (built from the password the container already has, so no secret passes through the drill).
EXEC_ENVIRONMENT: dict[str, str] = {
    POSTGRES: "export PGUSER=dispatchd PGDATABASE=dispatchd",
    REDIS: 'export REDIS_URL="redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"',
}

FORWARDING = re.compile(r"^Forwarding from (127\.0\.0\.1|\[::1\]):(\d+) -> \d+")


@dataclass(frozen=True)
class Workload:
    component: str
    kind: str  # "Deployment" or "StatefulSet"
    name: str
    selector: str
    container: str

    def port(self, port: str) -> int:
        """The container port behind a port name; Postgres and Redis have one, whatever is asked."""
        ports = PORTS[self.component]
        if self.component in (POSTGRES, REDIS):
            return next(iter(ports.values()))
        if port not in ports:
            raise ValueError(f"{self.component} has no {port!r} port (it has {sorted(ports)})")
        return ports[port]


def workload(component: str) -> tuple[Workload, int | None]:
    """The workload behind a component name, and the replica ordinal it names (None: all of them)."""
    kind, ordinal = split(component)
    return (
        Workload(
            component=kind,
            kind="StatefulSet" if kind == POSTGRES else "Deployment",
            name=f"dispatchd-{kind}",
            selector=f"{NAME_LABEL},app.kubernetes.io/component={kind}",
            container=kind,
        ),
        ordinal,
    )


def statefulset_ordinal(workload_name: str, pod_name: str) -> int:
    """dispatchd-postgres-2 -> 2 (StatefulSet pods are <workload>-<ordinal>)."""
    prefix, _, ordinal = pod_name.rpartition("-")
    if prefix != workload_name or not ordinal.isdigit():
        raise ValueError(f"{pod_name!r} is not a pod of the StatefulSet {workload_name!r}")
    return int(ordinal)


def replica_pod(target: Workload, live_pods: Sequence[str], ordinal: int) -> str:
    """The pod that is replica #ordinal among the workload's live (not terminating) pods."""
    if target.kind == "StatefulSet":
        by_ordinal = {statefulset_ordinal(target.name, pod): pod for pod in live_pods}
        if ordinal not in by_ordinal:
            raise LookupError(f"{target.component}#{ordinal}: no live pod (have {sorted(by_ordinal)})")
        return by_ordinal[ordinal]
    ordered = sorted(live_pods)
    if ordinal >= len(ordered):
        raise LookupError(f"{target.component}#{ordinal}: only {len(ordered)} live pod(s)")
    return ordered[ordinal]


def exec_argv(component: str, argv: Sequence[str]) -> list[str]:
    """argv as run in the container: for datastores under a shell that sets the client settings first.

    The command's own words travel as positional parameters ("$@"), never through the shell's
    parser, so they need no quoting.
    """
    environment = EXEC_ENVIRONMENT.get(component)
    if environment is None:
        return list(argv)
    return ["sh", "-c", f'{environment}; exec "$@"', "sh", *argv]


def forwarded_address(line: str) -> str | None:
    """The local host:port in a line of `kubectl port-forward` output, or None for other lines."""
    found = FORWARDING.match(line)
    if found is None:
        return None
    host = "127.0.0.1" if found.group(1) == "127.0.0.1" else "[::1]"
    return f"{host}:{found.group(2)}"
