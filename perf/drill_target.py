"""What a drill runs against: a `Platform` plus the addresses and logs the measurements read.

`--platform local` (the default) is a `Stack` on this machine; `--platform kubernetes` a
cluster deployed from deploy/ (the kind workflow's dev overlay), reached through
`KubernetesPlatform`'s port-forwards. Either way a drill gets a `Target`: the platform, a
Postgres and a Redis URL it can connect to, the control plane's address, and the scheduler
replicas' logs (the leader is the replica that logged the token in the lease key, tokens
being per process). In Kubernetes the database and Redis credentials are read from the
datastore containers' own environment (POSTGRES_PASSWORD, REDIS_PASSWORD), so no secret
is typed into the drill.

Invariant: the drills' measurement code sees only a `Target`, so both modes run the same
code; what differs (how logs are read, how URLs are built) is here, and its pure parts
(`holder`, `forwarded_url`, `gateway_pod`, `platform_of`) are unit-tested in
tests/unit/test_drill_target.py. The Kubernetes half has never run where dispatchd is
developed (no cluster there); the kind-e2e workflow runs it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from dispatchd.devtools.drills.local import LocalPlatform
from dispatchd.devtools.drills.platform import CONTROL_PLANE, POSTGRES, REDIS, SCHEDULER, Platform
from dispatchd.devtools.stack import Stack

if TYPE_CHECKING:
    from dispatchd.devtools.drills.kubernetes import KubernetesPlatform

LOCAL = "local"
KUBERNETES = "kubernetes"
# The dev overlay's database and role (deploy/components/in-cluster-datastores/postgres.yaml).
CLUSTER_DATABASE = "postgresql://dispatchd@dispatchd-postgres:5432/dispatchd"
CLUSTER_REDIS = "redis://dispatchd-redis:6379/0"

Logs = Callable[[], Awaitable[dict[str, str]]]


@dataclass(frozen=True)
class Target:
    mode: str
    platform: Platform
    database_url: str
    redis_url: str
    control_plane: str
    scheduler_logs: Logs  # replica name -> its log text, in replica (#N) order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", choices=(LOCAL, KUBERNETES), default=LOCAL, help="default %(default)s")
    parser.add_argument("--namespace", default="dispatchd", help="kubernetes mode: the namespace deployed to")
    parser.add_argument("--context", default=None, help="kubernetes mode: kubeconfig context (default: current)")


def platform_of(args: argparse.Namespace) -> str:
    """The chosen mode; --namespace/--context only mean something in kubernetes mode."""
    if args.platform == LOCAL and (args.context is not None or args.namespace != "dispatchd"):
        raise SystemExit("--namespace and --context apply to --platform kubernetes only")
    return str(args.platform)


def holder(logs: Mapping[str, str], token: str) -> str | None:
    """Which replica logged that it leads with `token`."""
    return next((name for name, text in logs.items() if token in text), None)


def forwarded_url(url: str, address: str, password: str | None = None) -> str:
    """`url` with its host:port replaced by a forwarded `address`, and the password set if given."""
    parts = urlsplit(url)
    user = parts.username or ""
    credentials = f"{user}:{password}@" if password is not None else (f"{user}@" if user else "")
    return urlunsplit(parts._replace(netloc=f"{credentials}{address}"))


def gateway_pod(gateway_id: str, pods: list[str]) -> str | None:
    """The pod a gateway id belongs to: gateway ids are "<hostname>-<8 hex>", the hostname the pod name."""
    prefix, _, suffix = gateway_id.rpartition("-")
    return prefix if prefix in pods and len(suffix) == 8 else None


def local(stack: Stack) -> Target:
    platform = LocalPlatform(stack)

    async def logs() -> dict[str, str]:
        paths = {name: stack.processes[name].log_path for name in platform.names(SCHEDULER)}
        return {name: await asyncio.to_thread(_read, path) for name, path in paths.items()}

    return Target(LOCAL, platform, stack.database_url, stack.redis_url, stack.control_plane_target, logs)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@contextmanager
def kubernetes(namespace: str, context: str | None) -> Iterator[Target]:
    """The cluster as a Target; its port-forwards are closed on exit."""
    from dispatchd.devtools.drills.kubernetes import KubernetesPlatform  # a dev extra: only in this mode

    platform = KubernetesPlatform(namespace=namespace, context=context)
    try:
        yield asyncio.run(_cluster(platform))
    finally:
        platform.close()


async def _cluster(platform: KubernetesPlatform) -> Target:
    postgres = (await platform.exec(POSTGRES, ["printenv", "POSTGRES_PASSWORD"])).decode().strip()
    redis = (await platform.exec(REDIS, ["printenv", "REDIS_PASSWORD"])).decode().strip()

    async def logs() -> dict[str, str]:
        return await asyncio.to_thread(scheduler_pod_logs, platform)

    return Target(
        KUBERNETES,
        platform,
        forwarded_url(CLUSTER_DATABASE, platform.address(POSTGRES), postgres),
        forwarded_url(CLUSTER_REDIS, platform.address(REDIS), redis),
        platform.address(CONTROL_PLANE),
        logs,
    )


def live_pods(platform: KubernetesPlatform, component: str) -> list[str]:
    """The component's live pods in name order: the order KubernetesPlatform numbers "#N" replicas by."""
    from dispatchd.devtools.drills.workloads import workload

    target, _ = workload(component)
    pods = platform.core.list_namespaced_pod(platform.namespace, label_selector=target.selector).items
    return sorted(p.metadata.name or "" for p in pods if p.metadata and p.metadata.deletion_timestamp is None)


def scheduler_pod_logs(platform: KubernetesPlatform) -> dict[str, str]:
    return {
        pod: str(platform.core.read_namespaced_pod_log(pod, platform.namespace, container=SCHEDULER))
        for pod in live_pods(platform, SCHEDULER)
    }
