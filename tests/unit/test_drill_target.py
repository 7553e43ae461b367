"""The pure parts of perf.drill_target: the mode chosen from the arguments, the leader found in
the replicas' logs, the URLs rebuilt on port-forwards, the pod a gateway id names."""

from __future__ import annotations

import argparse

import pytest

from perf.drill_target import KUBERNETES, LOCAL, add_arguments, forwarded_url, gateway_pod, holder, platform_of


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_local_is_the_default_and_kubernetes_takes_namespace_and_context() -> None:
    assert platform_of(parsed()) == LOCAL
    args = parsed("--platform", "kubernetes", "--namespace", "drills", "--context", "kind-dispatchd")
    assert (platform_of(args), args.namespace, args.context) == (KUBERNETES, "drills", "kind-dispatchd")


def test_cluster_options_without_kubernetes_mode_are_refused() -> None:
    with pytest.raises(SystemExit):
        platform_of(parsed("--context", "kind-dispatchd"))
    with pytest.raises(SystemExit):
        parsed("--platform", "docker")


def test_the_holder_is_the_replica_that_logged_the_token() -> None:
    logs = {
        "dispatchd-scheduler-7c9-abcde": '{"msg": "joins the leader election", "token": "1111"}\n',
        "dispatchd-scheduler-7c9-fghij": '{"msg": "became leader", "token": "2222"}\n',
    }
    assert holder(logs, "2222") == "dispatchd-scheduler-7c9-fghij"
    assert holder(logs, "3333") is None


def test_forwarded_urls_keep_user_and_database_and_take_the_password() -> None:
    assert (
        forwarded_url("postgresql://dispatchd@dispatchd-postgres:5432/dispatchd", "127.0.0.1:40001", "pw")
        == "postgresql://dispatchd:pw@127.0.0.1:40001/dispatchd"
    )
    assert forwarded_url("redis://dispatchd-redis:6379/0", "127.0.0.1:40002", "pw") == "redis://:pw@127.0.0.1:40002/0"
    assert forwarded_url("redis://dispatchd-redis:6379/0", "[::1]:40003") == "redis://[::1]:40003/0"


def test_gateway_ids_name_their_pod() -> None:
    pods = ["dispatchd-worker-gateway-5f7-aaaaa", "dispatchd-worker-gateway-5f7-bbbbb"]
    assert gateway_pod("dispatchd-worker-gateway-5f7-bbbbb-0123abcd", pods) == pods[1]
    assert gateway_pod("dispatchd-worker-gateway-5f7-ccccc-0123abcd", pods) is None  # a pod gone since
    assert gateway_pod("dispatchd-worker-gateway-5f7-aaaaa", pods) is None  # no random suffix: not a gateway id
