"""Which calls a passive region refuses, and which region settings are consistent."""

from __future__ import annotations

import pytest

from dispatchd.platform.config import Settings
from dispatchd.platform.methods import METHODS, is_mutating
from dispatchd.platform.regions import Region, RegionConfigError
from dispatchd.v1 import job_service_pb2, worker_service_pb2

JOB_METHODS = [
    f"/{m.containing_service.full_name}/{m.name}"
    for m in job_service_pb2.DESCRIPTOR.services_by_name["JobService"].methods
]
READS = {"GetJob", "ListJobs", "ListExecutions", "WaitJob", "ListDeadLetters"}
# The observe RPCs (observe.proto) only read.
READS |= {"ListLogs", "FollowLogs", "ListWorkers", "GetQueueStats", "GetClusterStatus", "WatchJobs"}


@pytest.mark.parametrize("method", JOB_METHODS)
def test_every_job_service_method_is_classified(method: str) -> None:
    name = method.rpartition("/")[2]
    # A read served by a passive region must be a known read; everything else is refused.
    assert is_mutating(method) == (name not in READS), method


def test_mutating_methods_exist_in_the_contract() -> None:
    worker = [
        f"/{m.containing_service.full_name}/{m.name}"
        for m in worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].methods
    ]
    assert {*JOB_METHODS, *worker} >= {m.path for m in METHODS if m.mutates}
    assert all(is_mutating(m) for m in worker)


@pytest.mark.parametrize(
    "method", ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
)
def test_health_and_reflection_are_never_refused(method: str) -> None:
    assert not is_mutating(method)


@pytest.mark.parametrize(
    "method", ["/dispatchd.v1.JobService/PurgeJobs", "/dispatchd.v1.JobService/GetSomething", "/other.Service/Get"]
)
def test_an_unknown_method_fails_closed(method: str) -> None:
    # Not in the method table: even a name that reads like a read is refused until it is added.
    assert is_mutating(method)


def region(**env: object) -> Region:
    return Region.from_settings(Settings(**env))  # type: ignore[arg-type]


def test_defaults_are_a_single_active_region() -> None:
    assert not region().passive


def test_a_passive_region_names_the_primary() -> None:
    passive = region(region="region-b", primary_region="region-a", allow_mutations=False)
    assert passive.passive
    message = passive.refusal("/dispatchd.v1.JobService/SubmitJob")
    assert "'region-b' is passive" in message and "SubmitJob" in message and "'region-a'" in message


def test_a_fenced_primary_says_so() -> None:
    fenced = region(region="region-a", primary_region="region-a", allow_mutations=False)
    assert "has mutations disabled" in fenced.refusal("/dispatchd.v1.JobService/CancelJob")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"region": "region-b", "primary_region": "region-a", "allow_mutations": True}, "only the primary"),
        ({"region": "", "primary_region": "region-a", "allow_mutations": False}, "must not be empty"),
    ],
)
def test_inconsistent_settings_are_refused(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(RegionConfigError, match=problem):
        region(**settings)
