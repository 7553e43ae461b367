"""Job events for live views: their wire form, and the feed's fan-out (bounded, filtered, never blocking)."""

from __future__ import annotations

import asyncio
import json

import pytest

from dispatchd.control_plane.job_feed import QUEUE_LIMIT, Filter, JobFeed
from dispatchd.platform import job_events
from dispatchd.platform.job_events import JobEvent, Kind
from dispatchd.platform.states import JobStatus
from dispatchd.v1 import observe_pb2


def test_kinds_are_the_wire_values() -> None:
    wire = {name.removeprefix("JOB_EVENT_KIND_"): value for name, value in observe_pb2.JobEventKind.items()}
    assert {k.name: int(k) for k in Kind} == {name: v for name, v in wire.items() if name != "UNSPECIFIED"}


def test_an_activity_batch_round_trips() -> None:
    events = [
        JobEvent("a", "email.send", Kind.SUBMITTED, int(JobStatus.PENDING), 1),
        JobEvent("b", "email", Kind.RETRYING, int(JobStatus.PENDING)),
    ]
    message = job_events.activity_message(events)
    assert message is not None
    parsed = job_events.parse_activity(message)
    assert [(e.job_id, e.job_type, e.kind, e.status, e.attempt) for e in parsed] == [
        (e.job_id, e.job_type, e.kind, e.status, e.attempt) for e in events
    ]
    assert all(p.at > 0 for p in parsed)
    assert job_events.activity_message([]) is None


def test_terminal_messages_stay_readable_by_waitjob_and_old_ones_by_the_feed() -> None:
    message = json.loads(job_events.terminal_message("j", int(JobStatus.FAILED), "t"))
    assert (message["job_id"], message["status"]) == ("j", int(JobStatus.FAILED))  # what WaitJob reads
    new = job_events.parse_terminal(json.dumps(message))
    assert (new.kind, new.job_type) == (Kind.DEAD_LETTERED, "t")
    # What an older service publishes: the kind follows from the status.
    old = job_events.parse_terminal(json.dumps({"job_id": "j", "status": int(JobStatus.CANCELED)}))
    assert (old.kind, old.job_type, old.at) == (Kind.CANCELED, "", 0.0)


@pytest.mark.parametrize("data", ["", "[]", '{"job_id": "j"}', '{"job_id": "j", "status": 99}'])
def test_a_malformed_terminal_message_is_a_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        job_events.parse_terminal(data)


@pytest.mark.parametrize("data", ["{}", '{"at": 1, "events": [["a", "t", 42, 1, 0]]}', '{"at": 1, "events": [1]}'])
def test_a_malformed_activity_message_is_a_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        job_events.parse_activity(data)


def _batch(count: int, job_type: str = "t") -> str:
    events = [JobEvent(str(i), job_type, Kind.SUBMITTED, int(JobStatus.PENDING), 1) for i in range(count)]
    message = job_events.activity_message(events)
    assert message is not None
    return message


async def test_a_slow_watch_skips_and_says_so_while_a_fast_one_gets_everything() -> None:
    feed = JobFeed()
    with feed.watch(Filter(), limit=4) as slow, feed.watch(Filter(), limit=QUEUE_LIMIT) as fast:
        feed.on_activity(_batch(10))  # the slow one reads nothing meanwhile: 4 fit, 6 are dropped
        got = [await asyncio.wait_for(fast.next(), 1) for _ in range(10)]
        assert [d.event.job_id for d in got if d.event] == [str(i) for i in range(10)]
        assert not any(d.gap for d in got)
        first = await asyncio.wait_for(slow.next(), 1)
        assert first.event is not None and first.event.job_id == "0" and first.gap and first.missed == 6
        rest = [await asyncio.wait_for(slow.next(), 1) for _ in range(3)]
        assert [d.event.job_id for d in rest if d.event] == ["1", "2", "3"] and not any(d.gap for d in rest)
    assert feed.watching() == 0


async def test_filters_and_interruptions() -> None:
    feed = JobFeed()
    heard: list[str] = []
    feed.listeners.append(lambda e: heard.append(e.job_id))
    with feed.watch(Filter(job_type="a", status=int(JobStatus.SUCCEEDED))) as watch:
        feed.on_activity(_batch(1, "a"))  # PENDING: filtered out
        feed.on_terminal(job_events.terminal_message("x", int(JobStatus.SUCCEEDED), "b"))  # other type
        feed.on_terminal(job_events.terminal_message("y", int(JobStatus.SUCCEEDED), "a"))
        feed.on_terminal("not json")  # logged and ignored
        delivery = await asyncio.wait_for(watch.next(), 1)
        assert delivery.event is not None and (delivery.event.job_id, delivery.event.kind) == ("y", Kind.SUCCEEDED)
        feed.interrupted()
        feed.interrupted()  # twice: still one notice
        notice = await asyncio.wait_for(watch.next(), 1)
        assert (notice.event, notice.gap, notice.missed) == (None, True, 0)
        feed.on_terminal(job_events.terminal_message("z", int(JobStatus.SUCCEEDED), "a"))
        after = await asyncio.wait_for(watch.next(), 1)
        assert after.event is not None and after.event.job_id == "z" and not after.gap
    assert heard == ["0", "x", "y", "z"]


async def test_closing_ends_every_watch_after_what_it_has_queued() -> None:
    feed = JobFeed()
    with feed.watch(Filter()) as watch:
        feed.on_activity(_batch(1))
        feed.close()
        delivery = await asyncio.wait_for(watch.next(), 1)
        assert delivery is not None and delivery.event is not None and delivery.event.job_id == "0"
        assert await asyncio.wait_for(watch.next(), 1) is None
    with feed.watch(Filter()) as late:  # a watch that starts while closing ends at once
        assert await asyncio.wait_for(late.next(), 1) is None


async def test_events_are_not_parsed_while_nobody_listens() -> None:
    feed = JobFeed()
    feed.on_activity("not json")  # no watch, no follower: not even parsed (no warning, no error)
    wanted = False
    feed.wanted = lambda: wanted
    heard: list[str] = []
    feed.listeners.append(lambda e: heard.append(e.job_id))
    feed.on_activity(_batch(1))
    wanted = True
    feed.on_activity(_batch(2))
    assert heard == ["0", "1"]
