"""The per-stream queues of the gateway are bounded: the outbox pushes back, the lanes budget bytes."""

from __future__ import annotations

import asyncio

from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.lanes import BYTES_PER_SLOT, Lanes
from dispatchd.worker_gateway.outbox import Outbox

ACK = pb.ConnectResponse(ack=pb.WorkerAck(kind="heartbeat"))


async def test_outbox_reports_a_reader_that_stopped_reading() -> None:
    outbox = Outbox(limit=2)
    outbox.put(ACK)
    assert await outbox.wait_room(0.05)  # below the limit: no wait at all
    outbox.put(ACK)
    assert outbox.full
    assert not await outbox.wait_room(0.05)  # full, and nothing leaves it


async def test_outbox_waits_while_its_reader_makes_progress() -> None:
    outbox = Outbox(limit=2)
    for _ in range(4):
        outbox.put(ACK)

    async def slow_reader() -> None:
        for _ in range(3):
            await asyncio.sleep(0.03)
            await outbox.get()

    reading = asyncio.create_task(slow_reader())
    # Each step is shorter than the stall time, so waiting succeeds though it takes longer.
    assert await outbox.wait_room(1.0)
    assert len(outbox) == 1
    await reading


async def test_outbox_end_can_discard_what_was_not_sent() -> None:
    outbox = Outbox(limit=2)
    outbox.put(ACK)
    outbox.end(discard=True)
    assert await outbox.get() is None


async def test_lanes_budget_bytes_as_well_as_messages() -> None:
    lanes = Lanes(limit=4)
    release = asyncio.Event()
    applied: list[int] = []

    async def apply(n: int) -> None:
        await release.wait()
        applied.append(n)

    # Two small messages take one slot each; one of 2 slots' worth of bytes takes three.
    await lanes.submit("a", lambda: apply(1))
    await lanes.submit("b", lambda: apply(2))
    big = asyncio.create_task(lanes.submit("c", lambda: apply(3), size=2 * BYTES_PER_SLOT))
    await asyncio.sleep(0.05)
    assert not big.done(), "a message over the budget was queued"
    release.set()
    await big
    assert await lanes.wait_idle(1.0)
    assert applied == [1, 2, 3]


async def test_a_message_larger_than_the_budget_goes_alone() -> None:
    lanes = Lanes(limit=4)
    applied: list[str] = []

    async def apply(name: str) -> None:
        applied.append(name)

    await lanes.submit("huge", lambda: apply("huge"), size=100 * BYTES_PER_SLOT)
    await lanes.submit("small", lambda: apply("small"))
    assert await lanes.wait_idle(1.0)
    assert sorted(applied) == ["huge", "small"]
