"""`Platform` on a Kubernetes cluster deployed from deploy/ (the kind workflow's dev overlay).

stop: hard deletes the pods with grace 0 (a whole component is first scaled to 0, so its
controller does not replace them; a single "#N" replica is replaced, as Kubernetes does);
soft scales the whole component to 0, or deletes one replica's pod with its normal grace.
start scales back to the replicas it had before the stop and waits until every pod is Ready.
scale patches the Deployment's or StatefulSet's scale. exec runs in the component's first
container through the pod exec stream (binary stdout, e.g. `pg_dump -Fc` in the database
pod). address is a `kubectl port-forward` to one pod, restarted when that pod went away.

Invariant: like LocalPlatform, every method has done what it says when it returns, or it
raises; blocking client calls run in threads so the drill's event loop keeps measuring.
Not run where dispatchd is developed (no cluster there): the kind-e2e workflow runs it.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Sequence

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from dispatchd.devtools.drills.workloads import Workload, exec_argv, forwarded_address, replica_pod, workload

READY_TIMEOUT = 300.0
EXEC_TIMEOUT = 600.0
POLL = 1.0


class CommandFailed(RuntimeError):
    """A command run through `exec` exited non-zero (the message has its stderr)."""


def live(metadata: client.V1ObjectMeta) -> bool:
    return metadata.deletion_timestamp is None


def ready(status: client.V1PodStatus | None) -> bool:
    conditions = (status.conditions if status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


class KubernetesPlatform:
    def __init__(self, namespace: str = "dispatchd", context: str | None = None) -> None:
        config.load_kube_config(context=context)  # type: ignore[no-untyped-call]  # the client leaves it unannotated
        self.namespace = namespace
        self.context = context
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self._stopped_at: dict[str, int] = {}
        self._forwards: dict[tuple[str, int], tuple[subprocess.Popen[str], str]] = {}

    # -- reading the cluster

    def _all_pods(self, target: Workload) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=target.selector).items

    def _pods(self, target: Workload, ordinal: int | None) -> list[str]:
        """Names of the live (not terminating) pods, or of the one that is replica #ordinal."""
        names = [pod.metadata.name or "" for pod in self._all_pods(target) if pod.metadata and live(pod.metadata)]
        return names if ordinal is None else [replica_pod(target, names, ordinal)]

    def _replicas(self, target: Workload) -> int:
        read = (
            self.apps.read_namespaced_stateful_set_scale
            if target.kind == "StatefulSet"
            else self.apps.read_namespaced_deployment_scale
        )
        spec = read(target.name, self.namespace).spec
        return (spec.replicas or 0) if spec else 0

    def _set_replicas(self, target: Workload, replicas: int) -> None:
        patch = (
            self.apps.patch_namespaced_stateful_set_scale
            if target.kind == "StatefulSet"
            else self.apps.patch_namespaced_deployment_scale
        )
        patch(target.name, self.namespace, {"spec": {"replicas": replicas}})

    def _settled(self, target: Workload) -> bool:
        """Exactly the wanted number of pods exist, none terminating, all Ready."""
        wanted = self._replicas(target)
        pods = self._all_pods(target)
        return len(pods) == wanted and all(pod.metadata and live(pod.metadata) and ready(pod.status) for pod in pods)

    def _wait_settled(self, target: Workload, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self._settled(target):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target.component}: not {self._replicas(target)} Ready pods after {timeout}s")
            time.sleep(POLL)

    def _wait_gone(self, pods: Sequence[str], timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for pod in pods:
            while True:
                try:
                    self.core.read_namespaced_pod(pod, self.namespace)
                except ApiException as exc:
                    if exc.status == 404:
                        break
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pod {pod} still exists after {timeout}s")
                time.sleep(POLL)

    # -- Platform

    async def stop(self, component: str, *, hard: bool = True) -> None:
        await asyncio.to_thread(self._stop, component, hard)

    def _stop(self, component: str, hard: bool) -> None:
        target, ordinal = workload(component)
        if ordinal is None:
            self._stopped_at.setdefault(target.component, self._replicas(target))
            pods = self._pods(target, None)
            self._set_replicas(target, 0)
        else:
            pods = self._pods(target, ordinal)
        for pod in pods:
            try:
                self.core.delete_namespaced_pod(pod, self.namespace, grace_period_seconds=0 if hard else None)
            except ApiException as exc:
                if exc.status != 404:  # already gone: scaling to 0 may have been quicker
                    raise
        if ordinal is None:
            self._wait_settled(target)
        else:
            self._wait_gone(pods)

    async def start(self, component: str) -> None:
        await asyncio.to_thread(self._start, component)

    def _start(self, component: str) -> None:
        target, _ = workload(component)
        replicas = self._stopped_at.pop(target.component, None)
        if replicas is not None:
            self._set_replicas(target, replicas)
        self._wait_settled(target)

    async def scale(self, component: str, replicas: int) -> None:
        target, ordinal = workload(component)
        if ordinal is not None:
            raise ValueError(f"{component}: scale a component, not one replica")
        self._stopped_at.pop(target.component, None)
        await asyncio.to_thread(self._set_replicas, target, replicas)
        await asyncio.to_thread(self._wait_settled, target)

    async def exec(self, component: str, argv: Sequence[str]) -> bytes:
        return await asyncio.to_thread(self._exec, component, argv)

    def _exec(self, component: str, argv: Sequence[str]) -> bytes:
        target, ordinal = workload(component)
        (pod,) = self._pods(target, ordinal or 0)
        session = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container=target.container,
            command=exec_argv(target.component, argv),
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )
        try:
            session.run_forever(timeout=EXEC_TIMEOUT)
            out: bytes = session.read_stdout()
            err: bytes = session.read_stderr()
            code = session.returncode
        finally:
            session.close()
        if code is None:
            raise TimeoutError(f"{list(argv)} in {pod} still running after {EXEC_TIMEOUT}s")
        if code != 0:
            raise CommandFailed(f"{list(argv)} in {pod} exited {code}: {err.decode(errors='replace')}")
        return out

    def address(self, component: str, port: str = "grpc") -> str:
        target, ordinal = workload(component)
        (pod,) = self._pods(target, ordinal or 0)
        number = target.port(port)
        forward = self._forwards.get((pod, number))
        if forward is not None and forward[0].poll() is None:
            return forward[1]
        process, local = self._port_forward(pod, number)
        self._forwards[(pod, number)] = (process, local)
        return local

    def _port_forward(self, pod: str, port: int) -> tuple[subprocess.Popen[str], str]:
        """kubectl port-forward from a free local port; its address once kubectl says it listens."""
        context = ["--context", self.context] if self.context else []
        argv = ["kubectl", *context, "-n", self.namespace, "port-forward", f"pod/{pod}", f":{port}"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        said = []
        for line in process.stdout:
            local = forwarded_address(line)
            if local is not None:
                # kubectl logs every connection; unread, the pipe would fill and stall it.
                threading.Thread(target=process.stdout.read, daemon=True).start()
                return process, local
            said.append(line)
        process.wait()
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {''.join(said)}")

    def close(self) -> None:
        """Stop every port-forward this platform started."""
        for process, _ in self._forwards.values():
            process.terminate()
            process.wait()
        self._forwards.clear()


__all__ = ["CommandFailed", "KubernetesPlatform"]
