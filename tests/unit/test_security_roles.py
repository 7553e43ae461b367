"""The method table's authorization column: complete, fail-closed, and the README shows exactly it."""

from __future__ import annotations

import pathlib

import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from dispatchd.platform import methods
from dispatchd.platform.methods import DENY_ALL, TABLE, rule_for
from dispatchd.platform.security import roles
from dispatchd.platform.security.roles import Role, Scope, roles_from_claims
from dispatchd.v1 import job_service_pb2, worker_service_pb2

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()


def _served_methods() -> set[str]:
    methods = set()
    for file in (job_service_pb2, worker_service_pb2, health_pb2, reflection_pb2):
        for service in file.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return methods


def test_every_served_method_has_a_rule_and_every_rule_a_method() -> None:
    served = _served_methods()
    assert served - set(TABLE) == set(), "add these methods to the authorization table"
    assert set(TABLE) - served == set(), "the table names methods nobody serves"


def test_unknown_methods_are_refused_to_everyone() -> None:
    rule = rule_for("/dispatchd.v1.JobService/DropAllJobs")
    assert rule is DENY_ALL
    assert rule.scope_for([r.value for r in Role]) is None


def test_readme_shows_the_table_and_the_roles() -> None:
    assert methods.markdown_table() in README, "regenerate the README table: print(methods.markdown_table())"
    assert roles.markdown_roles() in README, "regenerate the README roles: print(roles.markdown_roles())"


def test_worker_methods_only_for_workers_and_services() -> None:
    connect = rule_for("/dispatchd.v1.WorkerService/Connect")
    assert set(connect.grants) == {Role.WORKER, Role.SERVICE}
    for rule_name, rule in TABLE.items():
        if "WorkerService" not in rule_name:
            assert Role.WORKER not in rule.grants and Role.SERVICE not in rule.grants, rule_name


def test_scopes() -> None:
    get = rule_for("/dispatchd.v1.JobService/GetJob")
    assert get.scope_for(["submitter"]) is Scope.OWN
    assert get.scope_for(["submitter", "viewer"]) is Scope.ALL
    assert get.scope_for(["worker"]) is None
    assert get.scope_for(["nonsense"]) is None
    assert rule_for("/grpc.health.v1.Health/Check").public


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"roles": ["viewer", "operator"]}, {"viewer", "operator"}),
        ({"roles": "viewer operator"}, {"viewer", "operator"}),
        ({"roles": "viewer,operator"}, {"viewer", "operator"}),
        ({"scope": "openid dispatchd:viewer profile"}, {"openid", "viewer", "profile"}),
        ({"scp": ["dispatchd.admin"]}, {"admin"}),
        ({"roles": ["viewer", 7, None, ""], "scope": 12}, {"viewer"}),
        ({"roles": {"admin": True}}, set()),
        ({}, set()),
    ],
)
def test_roles_from_claims(claims: dict[str, object], expected: set[str]) -> None:
    assert roles_from_claims(claims) == expected
