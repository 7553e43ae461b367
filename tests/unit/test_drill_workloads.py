"""The pure half of the drills' Kubernetes mode: component names to workloads, replica ordinals,
the datastore exec wrapper (run here under a real shell) and kubectl's port-forward output.
The half that talks to a cluster (KubernetesPlatform) is not run here: there is no cluster."""

from __future__ import annotations

import subprocess

import pytest

from dispatchd.devtools.drills.workloads import (
    exec_argv,
    forwarded_address,
    replica_pod,
    statefulset_ordinal,
    workload,
)


def test_component_names_map_to_workloads_and_ordinals() -> None:
    target, ordinal = workload("scheduler#1")
    assert (target.kind, target.name, target.container, ordinal) == (
        "Deployment",
        "dispatchd-scheduler",
        "scheduler",
        1,
    )
    assert target.selector == "app.kubernetes.io/name=dispatchd,app.kubernetes.io/component=scheduler"
    postgres, whole = workload("postgres")
    assert (postgres.kind, whole) == ("StatefulSet", None)
    with pytest.raises(ValueError, match="unknown component"):
        workload("scheduler#x")
    with pytest.raises(ValueError, match="unknown component"):
        workload("database")


def test_ports_by_name() -> None:
    assert workload("worker-gateway")[0].port("grpc") == 50052
    assert workload("control-plane")[0].port("metrics") == 9464
    assert workload("postgres")[0].port("grpc") == 5432  # one port, whatever is asked
    with pytest.raises(ValueError, match="no 'grpc' port"):
        workload("worker")[0].port("grpc")


def test_statefulset_ordinals() -> None:
    assert statefulset_ordinal("dispatchd-postgres", "dispatchd-postgres-12") == 12
    for pod in ("dispatchd-postgres", "dispatchd-postgres-x", "other-postgres-0", "dispatchd-postgres-0-1"):
        with pytest.raises(ValueError):
            statefulset_ordinal("dispatchd-postgres", pod)


def test_replica_pods() -> None:
    postgres, _ = workload("postgres")
    assert replica_pod(postgres, ["dispatchd-postgres-1", "dispatchd-postgres-0"], 1) == "dispatchd-postgres-1"
    with pytest.raises(LookupError, match="no live pod"):
        replica_pod(postgres, ["dispatchd-postgres-1"], 0)  # ordinals are identities, not positions
    gateway, _ = workload("worker-gateway")
    pods = ["dispatchd-worker-gateway-7c9-zz", "dispatchd-worker-gateway-7c9-aa"]
    assert replica_pod(gateway, pods, 0) == "dispatchd-worker-gateway-7c9-aa"
    with pytest.raises(LookupError, match="only 2 live pod"):
        replica_pod(gateway, pods, 2)


def run(argv: list[str], env: dict[str, str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **env}).stdout


def test_datastore_commands_get_client_settings_and_keep_their_words() -> None:
    words = ["a b", "$HOME", "'q'", '"d"', "; false"]
    assert run(exec_argv("postgres", ["printf", "%s|", *words]), {}) == "|".join(words) + "|"
    assert run(exec_argv("postgres", ["printenv", "PGUSER", "PGDATABASE"]), {}) == "dispatchd\ndispatchd\n"
    assert (
        run(exec_argv("redis", ["printenv", "REDIS_URL"]), {"REDIS_PASSWORD": "pw"}) == "redis://:pw@127.0.0.1:6379/0\n"
    )
    assert exec_argv("scheduler", ["python", "-V"]) == ["python", "-V"]


def test_port_forward_output() -> None:
    assert forwarded_address("Forwarding from 127.0.0.1:41234 -> 50051\n") == "127.0.0.1:41234"
    assert forwarded_address("Forwarding from [::1]:41234 -> 50051") == "[::1]:41234"
    assert forwarded_address("Handling connection for 41234") is None
    assert forwarded_address("error: unable to forward port") is None
