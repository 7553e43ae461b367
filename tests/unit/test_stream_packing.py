"""Packing queued stream messages into batches: order kept where it matters, start notices folded."""

from __future__ import annotations

import asyncio
from collections import deque

from dispatchd.common import packing
from dispatchd.sdk.outbox import Outbox as WorkerOutbox
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.outbox import Outbox as GatewayOutbox

Item = tuple[str, str]  # (kind, execution id); kind "-" is a barrier, "x" dropped


def _classify(item: Item) -> packing.Packable:
    kind = item[0]
    if kind == "x":
        return packing.DROP
    return None if kind == "-" else item


def _take(queue: deque[Item], cap: int = 3) -> list[list[str]]:
    return [[f"{k}{e}" for k, e in group] for group in packing.take(queue, _classify, cap)]


def test_kinds_pack_together_up_to_a_barrier_which_goes_alone() -> None:
    queue = deque([("a", "1"), ("r", "2"), ("a", "3"), ("x", "4"), ("r", "5"), ("-", ""), ("a", "6")])
    assert _take(queue) == [["a1", "a3"], ["r2", "r5"]]
    assert _take(queue) == [["-"]]
    assert _take(queue) == [["a6"]] and not queue


def test_one_execution_never_changes_places_across_kinds() -> None:
    # r1 would go out in the "r" group after a3, but must follow a1 in place: the window closes before it.
    queue = deque([("r", "9"), ("a", "1"), ("a", "3"), ("r", "1")])
    assert _take(queue) == [["r9"], ["a1", "a3"]]
    assert _take(queue) == [["r1"]]


def test_a_group_holds_at_most_cap_items() -> None:
    queue = deque([("a", str(i)) for i in range(5)])
    assert _take(queue) == [["a0", "a1", "a2"]]
    assert _take(queue) == [["a3", "a4"]]


def test_dropped_items_may_leave_nothing_to_send() -> None:
    assert _take(deque([("x", "1")])) == []


def _assignment(execution_id: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(assignment=pb.TaskAssignment(execution_id=execution_id))


def _ack(execution_id: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(ack=pb.WorkerAck(kind="result", execution_id=execution_id))


async def test_the_gateway_packs_only_for_a_batching_stream() -> None:
    registration = pb.ConnectResponse(ack=pb.WorkerAck(kind="registration"))
    cancel = pb.ConnectResponse(cancel=pb.CancelExecution(execution_id="1"))
    queued = [registration, _assignment("1"), _ack("0"), _assignment("2"), cancel, _ack("1"), _ack("2")]
    plain = GatewayOutbox()
    for message in queued:
        plain.put(message)
    assert [await plain.get() for _ in queued] == queued
    batching = GatewayOutbox()
    batching.batching = True
    for message in queued:
        batching.put(message)
    batching.end()
    sent = []
    while (response := await batching.get()) is not None:
        sent.append(response)
    assert sent == [
        registration,
        pb.ConnectResponse(assignment_batch=pb.TaskAssignmentBatch(assignments=[a.assignment for a in queued[1:4:2]])),
        _ack("0"),
        cancel,
        pb.ConnectResponse(ack_batch=pb.WorkerAckBatch(acks=[_ack("1").ack, _ack("2").ack])),
    ]


def _result(execution_id: str) -> pb.TaskResult:
    return pb.TaskResult(execution_id=execution_id, success=True)


async def _drain(outbox: WorkerOutbox) -> list[pb.ConnectRequest]:
    outbox.close()
    sent: list[pb.ConnectRequest] = []
    while (message := await asyncio.wait_for(outbox.get(), 1)) is not None:
        sent.append(message)
    return sent


async def test_the_worker_folds_an_unsent_start_into_its_result_with_or_without_batches() -> None:
    for batching in (False, True):
        outbox = WorkerOutbox()
        outbox.batching = batching
        outbox.put_started("1")
        outbox.put_started("2")
        outbox.put_result(_result("1"))
        assert await _drain(outbox) == [
            pb.ConnectRequest(started=pb.TaskStarted(execution_id="2")),
            pb.ConnectRequest(result=_result("1")),
        ]


async def test_the_worker_batches_what_is_queued_and_keeps_heartbeats_in_place() -> None:
    outbox = WorkerOutbox()
    outbox.batching = True
    heartbeat = pb.ConnectRequest(heartbeat=pb.WorkerHeartbeat(worker_id="w"))
    outbox.put_started("3")
    outbox.put_result(_result("1"))
    outbox.put_result(_result("2"))
    outbox.put(heartbeat)
    assert await outbox.get() == pb.ConnectRequest(started=pb.TaskStarted(execution_id="3"))
    # Taken by the writer: the start can no longer be folded into its result.
    outbox.put_result(_result("3"))
    outbox.put_result(_result("4"))
    assert await _drain(outbox) == [
        pb.ConnectRequest(result_batch=pb.TaskResultBatch(results=[_result("1"), _result("2")])),
        heartbeat,
        pb.ConnectRequest(result_batch=pb.TaskResultBatch(results=[_result("3"), _result("4")])),
    ]
