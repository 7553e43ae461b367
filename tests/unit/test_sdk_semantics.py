"""What the SDK stream sends back for an assignment: claim tokens, heartbeat lists, timeouts.

Driven without a gateway: assignments go in as the reader would hand them over, and what
the stream queues for the gateway is read back from its outbox.
"""

from __future__ import annotations

import asyncio

from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY

from dispatchd.sdk import metrics
from dispatchd.sdk.registry import Registry
from dispatchd.sdk.stream import Config, StopRequest, Stream
from dispatchd.sdk.task import Task
from dispatchd.v1 import worker_service_pb2 as pb


def _stream(handler: object, job_type: str = "t") -> Stream:
    registry = Registry()
    registry.register(job_type, handler)  # type: ignore[arg-type]
    config = Config(target="unused", worker_id="w", max_concurrency=2, labels={}, heartbeat_seconds=5)
    return Stream(config, registry, asyncio.Semaphore(2), StopRequest())


def _assignment(execution_id: str, timeout_ms: int | None = None) -> pb.TaskAssignment:
    assignment = pb.TaskAssignment(
        execution_id=execution_id, job_type="t", attempt=1, claim_token=f"tok-{execution_id}"
    )
    if timeout_ms is not None:
        duration = Duration()
        duration.FromMilliseconds(timeout_ms)
        assignment.execution_timeout.CopyFrom(duration)
    return assignment


async def _drain(stream: Stream) -> list[pb.ConnectRequest]:
    messages = []
    while len(stream.outbox):
        message = await stream.outbox.get()
        assert message is not None
        messages.append(message)
    return messages


async def _settle(stream: Stream) -> None:
    runners = [r.runner for r in stream.executions.running.values() if r.runner is not None]
    await asyncio.gather(*runners, return_exceptions=True)


async def test_results_carry_the_claim_token_and_heartbeats_list_what_runs() -> None:
    release = asyncio.Event()

    async def handler(task: Task) -> str:
        await release.wait()
        return "ok"

    stream = _stream(handler)
    stream.executions.start(_assignment("a"))
    stream.executions.start(_assignment("b"))
    await asyncio.sleep(0)
    beat = stream._heartbeat().heartbeat
    assert beat.lists_running and sorted(beat.running_execution_ids) == ["a", "b"]
    release.set()
    await _settle(stream)
    results = [m.result for m in await _drain(stream) if m.WhichOneof("payload") == "result"]
    assert sorted((r.execution_id, r.claim_token, r.success) for r in results) == [
        ("a", "tok-a", True),
        ("b", "tok-b", True),
    ]
    empty = stream._heartbeat().heartbeat
    assert empty.lists_running and list(empty.running_execution_ids) == []


async def test_timeout_cancels_the_handler_and_fails_the_attempt() -> None:
    observed: list[bool] = []

    async def handler(task: Task) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            observed.append(task.cancelled.is_set())
            raise

    stream = _stream(handler)
    stream.executions.start(_assignment("a", timeout_ms=50))
    assert stream.executions.running["a"].task.execution_timeout == 0.05
    await asyncio.wait_for(_settle(stream), 2)
    (result,) = [m.result for m in await _drain(stream) if m.WhichOneof("payload") == "result"]
    assert (result.success, result.claim_token) == (False, "tok-a")
    assert result.error_message == "execution timed out after 0.05s"
    assert observed == [True]


async def test_a_cancel_from_the_gateway_is_reported_as_cancelled() -> None:
    async def handler(task: Task) -> None:
        await asyncio.sleep(10)

    stream = _stream(handler)
    stream.executions.start(_assignment("a", timeout_ms=60_000))
    await asyncio.sleep(0)
    stream.executions.cancel(pb.CancelExecution(execution_id="a", reason="job cancelled"))
    stream.executions.cancel(pb.CancelExecution(execution_id="a", reason="again"))  # repeated cancels are harmless
    await asyncio.wait_for(_settle(stream), 2)
    (result,) = [m.result for m in await _drain(stream) if m.WhichOneof("payload") == "result"]
    assert (result.success, result.error_message) == (False, "cancelled")
    assert stream.executions.running == {}


async def test_the_worker_metrics_count_each_ending_once_by_outcome() -> None:
    def counts() -> dict[str, float]:
        name = "dispatchd_worker_executions_total"
        return {o: REGISTRY.get_sample_value(name, {"job_type": "t", "outcome": o}) or 0.0 for o in metrics.OUTCOMES}

    async def handler(task: Task) -> str:
        if task.payload == b"fail":
            raise RuntimeError("no")
        if task.payload == b"slow":
            await asyncio.sleep(10)
        return "ok"

    before = counts()
    stream = _stream(handler)
    for execution_id, payload, timeout_ms in [("ok", b"", None), ("bad", b"fail", None), ("late", b"slow", 50)]:
        assignment = _assignment(execution_id, timeout_ms)
        assignment.payload = payload
        stream.executions.start(assignment)
    await asyncio.wait_for(_settle(stream), 2)
    slow = _assignment("stopped")
    slow.payload = b"slow"
    stream.executions.start(slow)
    await asyncio.sleep(0)
    assert REGISTRY.get_sample_value("dispatchd_worker_inflight") == 1
    stream.executions.cancel(pb.CancelExecution(execution_id="stopped", reason="job cancelled"))
    await asyncio.wait_for(_settle(stream), 2)
    after = counts()
    assert {o: after[o] - before[o] for o in after} == {
        "succeeded": 1,
        "failed": 1,
        "timed_out": 1,
        "canceled": 1,
        "abandoned": 0,
    }
    assert REGISTRY.get_sample_value("dispatchd_worker_inflight") == 0
