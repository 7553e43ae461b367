"""Schedules in the store: definitions, and exactly one fire per fire time under two leaders.

Two "leaders" with different fencing epochs fire the same overdue schedules at once, over and
over, while terms change hands: every fire time is recorded once and started exactly one job,
the stale leader's transactions change nothing, and none of the fire times is missing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid

import asyncpg
import pytest

from dispatchd.platform.catch_up import CatchUp, Overlap
from dispatchd.platform.errors import NotFound
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import fence, fires, schedules, workflows
from dispatchd.platform.store.fence import Fenced
from dispatchd.platform.store.submits import NewJob
from dispatchd.platform.workflow_definitions import parse

pytestmark = pytest.mark.integration

GRACE = dt.timedelta(seconds=5)


def definition(name: str, **overrides: object) -> schedules.Definition:
    job = NewJob("report.build", b'{"x":1}', 0, None, {"team": "a"}, RetryPolicy(), False, submitted_by="alice")
    fields: dict[str, object] = {
        "name": name, "cron": None, "interval": dt.timedelta(seconds=1), "time_zone": "UTC", "job": job,
        "catch_up": CatchUp.ALL, "catch_up_limit": 1000, "overlap": Overlap.ALLOW,
    }
    fields.update(overrides)
    return schedules.Definition(**fields)  # type: ignore[arg-type]


async def put(pool: asyncpg.Pool, d: schedules.Definition) -> schedules.ScheduleRow:
    async with pool.acquire() as conn, conn.transaction():
        row, _ = await schedules.put(conn, d)
    return row


async def backdate(pool: asyncpg.Pool, name: str, seconds: float) -> None:
    """Pretend the scheduler was down for `seconds`: the schedule's cursor is that old."""
    await pool.execute(
        "UPDATE schedules SET anchor_at = anchor_at - make_interval(secs => $2), "
        "cursor_at = cursor_at - make_interval(secs => $2), next_fire_at = next_fire_at - make_interval(secs => $2)"
        " WHERE name = $1", name, seconds,
    )


async def test_put_is_an_upsert_that_keeps_the_cursor_of_an_unchanged_definition(db_pool: asyncpg.Pool) -> None:
    first = await put(db_pool, definition("nightly", cron="0 3 * * *", interval=None, time_zone="Europe/Berlin"))
    again = await put(db_pool, definition("nightly", cron="0 3 * * *", interval=None, time_zone="Europe/Berlin"))
    assert (again.schedule_id, again.cursor_at, again.updated_at) == (first.schedule_id, first.cursor_at,
                                                                      first.updated_at)
    assert first.next_fire_at.astimezone(dt.UTC).hour in (1, 2)  # 03:00 Berlin
    changed = await put(db_pool, definition("nightly", cron="0 4 * * *", interval=None, time_zone="Europe/Berlin"))
    assert changed.schedule_id == first.schedule_id and changed.next_fire_at > first.next_fire_at
    paused = await schedules.set_paused(db_pool, "nightly", True)
    assert paused.definition.paused and await fires.due(db_pool, 10) == []
    assert await schedules.delete(db_pool, ["nightly", "absent"]) == ["nightly"]
    with pytest.raises(NotFound, match="nightly"):
        await schedules.get(db_pool, "nightly")


async def test_two_leaders_fire_every_fire_time_exactly_once(db_pool: asyncpg.Pool) -> None:
    names = [f"every-second-{i}" for i in range(3)]
    for name in names:
        await put(db_pool, definition(name))
        await backdate(db_pool, name, 30)  # ~30 overdue fire times each
    ids = [(await schedules.get(db_pool, n)).schedule_id for n in names]
    stale, fenced = await fence.open_term(db_pool, 1), 0
    current = await fence.open_term(db_pool, 2)

    async def leader(epoch: int) -> int:
        refused = 0
        for schedule_id in ids * 3:
            try:
                await fires.fire(db_pool, schedule_id, epoch=epoch, grace=GRACE)
            except Fenced:
                refused += 1
        return refused

    for _ in range(3):
        # Both believe they lead; then a newer term starts while both keep firing.
        refused = await asyncio.gather(leader(stale), leader(current), leader(current))
        fenced += refused[0]
        assert refused[1:] == [0, 0]
        stale, current = current, await fence.open_term(db_pool, current + 1)
        # More becomes due for the next round, and the recorded fire times of the last 3 s
        # come due again: only the primary key refuses them now.
        await backdate(db_pool, names[0], 3)
    assert fenced > 0
    for schedule_id in ids:
        rows = await db_pool.fetch(
            "SELECT f.fire_time, f.job_id, j.metadata, j.status FROM schedule_fires f"
            " JOIN jobs j USING (job_id) WHERE f.schedule_id = $1 ORDER BY f.fire_time", schedule_id)
        times = [r["fire_time"] for r in rows]
        assert len(times) >= 30 and len(set(times)) == len(times)
        gaps = {b - a for a, b in itertools.pairwise(times)}
        assert gaps == {dt.timedelta(seconds=1)}, "a fire time is missing"
        assert all(r["status"] == JobStatus.PENDING for r in rows)
        assert [r["metadata"]["dispatchd.fire_time"] for r in rows] == [t.isoformat() for t in times]
        jobs = await db_pool.fetchval(
            "SELECT count(*) FROM jobs WHERE metadata->>'dispatchd.schedule' = (SELECT name FROM schedules"
            " WHERE schedule_id = $1)", schedule_id)
        assert jobs == len(times)  # one job per fire, none without a fire row


async def test_overlap_skip_records_the_fire_without_a_job_while_the_last_job_is_active(
    db_pool: asyncpg.Pool,
) -> None:
    row = await put(db_pool, definition("no-overlap", overlap=Overlap.SKIP))
    await backdate(db_pool, "no-overlap", 3.5)
    fired = await fires.fire(db_pool, row.schedule_id, epoch=None, grace=GRACE)
    assert fired is not None and len(fired.fired) == 3
    assert [started is not None for _, started in fired.fired] == [True, False, False]
    (first_job,) = [started.job_id for _, started in fired.fired if started is not None]
    await db_pool.execute("UPDATE jobs SET status = $2 WHERE job_id = $1", first_job, int(JobStatus.SUCCEEDED))
    await backdate(db_pool, "no-overlap", 2.5)  # half a period: fire times not recorded yet
    again = await fires.fire(db_pool, row.schedule_id, epoch=None, grace=GRACE)
    assert again is not None and [started is not None for _, started in again.fired][:2] == [True, False]
    latest = await schedules.get(db_pool, "no-overlap")
    first = again.fired[0][1]
    assert first is not None and latest.last_job_id == first.job_id and latest.last_fire_at == again.fired[-1][0]


async def test_paused_and_deleted_schedules_do_not_fire(db_pool: asyncpg.Pool) -> None:
    row = await put(db_pool, definition("paused", paused=True))
    await backdate(db_pool, "paused", 5)
    assert await fires.fire(db_pool, row.schedule_id, epoch=None, grace=GRACE) is None
    resumed = await schedules.set_paused(db_pool, "paused", False)
    assert resumed.cursor_at > row.cursor_at  # the paused time is never caught up
    assert await fires.fire(db_pool, uuid.uuid4(), epoch=None, grace=GRACE) is None


async def test_a_workflow_schedule_starts_runs_and_records_a_run_it_could_not_start(db_pool: asyncpg.Pool) -> None:
    flow = parse({"name": "etl.flow", "steps": [{"id": "a", "job_type": "etl.a"}, {"id": "b", "job_type": "etl.b",
                                                                                   "depends_on": ["a"]}]})
    async with db_pool.acquire() as conn:
        await workflows.register(conn, flow, "api")
    target = schedules.WorkflowTarget("etl.flow", None, b'{"day": 1}')
    row = await put(db_pool, definition("flow.every-second", workflow=target, overlap=Overlap.SKIP))
    await backdate(db_pool, "flow.every-second", 2.5)
    fired = await fires.fire(db_pool, row.schedule_id, epoch=None, grace=GRACE)
    assert fired is not None and len(fired.queued) == 1  # the root step's first attempt
    first, *rest = [started for _, started in fired.fired]
    assert first is not None and first.run_id is not None and first.job_id is None
    assert rest == [None] * len(rest) and rest  # the run is still running: the overlap policy skipped these
    assert await db_pool.fetchval("SELECT count(*) FROM workflow_runs WHERE input = $1", target.input) == 1
    gone = await put(db_pool, definition("flow.gone", workflow=schedules.WorkflowTarget("etl.flow", 9, b"")))
    await backdate(db_pool, "flow.gone", 1.5)
    failed = await fires.fire(db_pool, gone.schedule_id, epoch=None, grace=GRACE)
    assert failed is not None and failed.fired
    assert all(s is not None and s.run_id is None and "etl.flow" in s.error for _, s in failed.fired)
    assert (await schedules.get(db_pool, "flow.gone")).cursor_at > gone.cursor_at  # the schedule went on
