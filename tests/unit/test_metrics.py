"""The metrics module on its own: the listen setting, the /metrics port, the gRPC interceptor, job counting."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.exceptions
from prometheus_client import REGISTRY

import dispatchd.scheduler.metrics
import dispatchd.sdk.metrics
import dispatchd.worker_gateway.metrics  # registers the metrics of each process kind
from dispatchd.common.metrics import MetricsListenError, parse_listen, serve_metrics
from dispatchd.platform import metrics
from dispatchd.platform.rpc_metrics import MetricsInterceptor, method_label
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store.fires import Started
from dispatchd.platform.store.rows import QueuedRef, Settlement
from tests.support import metric_names
from tests.support.scrape import parse, read


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("", None),
        ("  ", None),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_listen_addresses(listen: str, address: tuple[str, int] | None) -> None:
    assert parse_listen(listen) == address


@pytest.mark.parametrize("listen", ["9464", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(MetricsListenError, match="host:port"):
        parse_listen(listen)


def test_the_port_serves_the_registry_with_build_info() -> None:
    assert serve_metrics("", "unit-off") is None  # off: nothing listens, build info still recorded
    server = serve_metrics("127.0.0.1:0", "unit-on")
    assert server is not None
    try:
        samples = parse(read(f"http://127.0.0.1:{server.port}/metrics"))
    finally:
        server.stop()
    info = {dict(labels)["service"]: v for (name, labels), v in samples.items() if name == "dispatchd_build_info"}
    assert info["unit-on"] == 1 and info["unit-off"] == 1


# -- the interceptor, on a real server


class Refuse(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Stands in for the security interceptor: refuses `Refused` before its handler runs."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if not details.method.endswith("/Refused"):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")

        return grpc.unary_unary_rpc_method_handler(refuse)


async def ok(request: bytes, context: Any) -> bytes:
    return request


async def missing(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort raises")


async def broken(request: bytes, context: Any) -> bytes:
    raise RuntimeError("a bug")


# Holds a server stream open after its first response until the test has looked.
held_open: list[asyncio.Event] = []


async def listing(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield request
    await held_open[-1].wait()
    yield request
    yield request


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[MetricsInterceptor("unit-rpc"), Refuse()])
    unary = {name: grpc.unary_unary_rpc_method_handler(h) for name, h in [("Ok", ok), ("Missing", missing)]}
    unary |= {"Broken": grpc.unary_unary_rpc_method_handler(broken), "Refused": grpc.unary_unary_rpc_method_handler(ok)}
    unary["List"] = grpc.unary_stream_rpc_method_handler(listing)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.v1.Probe", unary)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


async def _call(channel: grpc.aio.Channel, method: str) -> grpc.StatusCode:
    try:
        await channel.unary_unary(f"/test.v1.Probe/{method}")(b"x")
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_every_call_is_counted_once_with_the_code_its_caller_got(channel: grpc.aio.Channel) -> None:
    labels = {"service": "unit-rpc"}
    for method, code in [("Ok", "OK"), ("Missing", "NOT_FOUND"), ("Broken", "UNKNOWN"), ("Refused", "UNAUTHENTICATED")]:
        got = await _call(channel, method)
        assert got.name == code
        counted = value("dispatchd_grpc_server_requests_total", **labels, method=f"Probe/{method}", code=code)
        assert counted == 1, (method, code)
        assert value("dispatchd_grpc_server_request_duration_seconds_count", **labels, method=f"Probe/{method}") == 1


async def test_streams_are_counted_when_they_end_and_open_while_they_last(channel: grpc.aio.Channel) -> None:
    labels = {"service": "unit-rpc", "method": "Probe/List"}
    held_open.append(asyncio.Event())
    call = channel.unary_stream("/test.v1.Probe/List")(b"x")
    seen = 0
    async for _ in call:
        seen += 1
        if seen == 1:
            assert value("dispatchd_grpc_server_streams", **labels) == 1
            held_open[-1].set()
    assert seen == 3
    assert value("dispatchd_grpc_server_requests_total", **labels, code="OK") == 1
    assert value("dispatchd_grpc_server_streams", **labels) == 0
    # A stream's duration is its client's business (a worker stream lasts as long as the worker).
    assert value("dispatchd_grpc_server_request_duration_seconds_count", **labels) == 0


def test_method_labels_drop_the_package() -> None:
    assert method_label("/dispatchd.v1.JobService/SubmitJob") == "JobService/SubmitJob"
    assert method_label("/grpc.health.v1.Health/Check") == "Health/Check"


# -- job counting from what the store returned


def _settlement(job_type: str, status: JobStatus | None, *, retry: bool = False, applied: bool = True) -> Settlement:
    ref = QueuedRef(uuid.uuid4(), job_type, 0, dt.datetime.now(dt.UTC)) if retry else None
    return Settlement(applied=applied, job_status=status, retry=ref, job_type=job_type, job_age_seconds=2.0)


def test_settlements_count_retries_outcomes_and_dead_letters() -> None:
    kind = "unit.settled"
    metrics.count_settled(
        [
            _settlement(kind, JobStatus.PENDING, retry=True),
            _settlement(kind, JobStatus.SUCCEEDED),
            _settlement(kind, JobStatus.FAILED),
            _settlement(kind, JobStatus.SUCCEEDED, applied=False),  # a stale result: nothing changed
        ]
    )
    assert value("dispatchd_jobs_retried_total", job_type=kind) == 1
    assert value("dispatchd_jobs_finished_total", job_type=kind, outcome="succeeded") == 1
    assert value("dispatchd_jobs_finished_total", job_type=kind, outcome="failed") == 1
    assert value("dispatchd_jobs_dead_lettered_total", job_type=kind) == 1
    assert value("dispatchd_job_submit_to_terminal_seconds_count", job_type=kind, outcome="failed") == 1
    assert value("dispatchd_job_submit_to_terminal_seconds_sum", job_type=kind, outcome="succeeded") == 2.0


def test_store_errors_name_the_store_and_the_service() -> None:
    metrics.bind_service("unit-store")
    before = value("dispatchd_store_errors_total", store="redis", service="unit-store")
    metrics.count_store_error(redis.exceptions.ConnectionError("down"))
    metrics.count_store_error(OSError("refused"))
    metrics.count_store_error(TimeoutError(), "redis")
    assert value("dispatchd_store_errors_total", store="redis", service="unit-store") == before + 2
    assert value("dispatchd_store_errors_total", store="postgres", service="unit-store") == 1


def test_the_readme_table_lists_exactly_the_metrics_the_processes_export() -> None:
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("dispatchd_")
    }
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(dispatchd_[a-z_]+)` \|", section, re.MULTILINE))
    assert documented == exported


def test_the_dashboard_contract_names_exactly_the_exported_metrics_with_their_types() -> None:
    # tests/support/metric_names.py is what the alert and dashboard checks accept; it must be
    # what the code registers, name for name and type for type.
    exported = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in REGISTRY.collect()
        if family.name.startswith("dispatchd_")
    }
    assert exported == metric_names.EXPORTED


def test_schedule_fires_count_what_each_fire_time_started_and_what_was_dropped() -> None:
    outcomes = ("job", "workflow_run", "error", "skipped")
    before = {o: value("dispatchd_schedule_fires_total", outcome=o) for o in outcomes}
    dropped = value("dispatchd_schedule_fires_dropped_total")
    fires = [Started(job_id=uuid.uuid4()), Started(job_id=uuid.uuid4()), Started(run_id=uuid.uuid4())]
    dispatchd.scheduler.metrics.count_fires([*fires, Started(error="workflow gone"), None], dropped=3)
    after = {o: value("dispatchd_schedule_fires_total", outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"job": 2, "workflow_run": 1, "error": 1, "skipped": 1}
    assert value("dispatchd_schedule_fires_dropped_total") - dropped == 3
