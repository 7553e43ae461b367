"""Schedules through the API: dispatchctl and the Python client against a real control plane process."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from dispatchd.client import AsyncClient, InvalidArgument
from dispatchd.platform.store import workflows
from dispatchd.platform.workflow_definitions import parse
from tests.integration.test_cli import Ctl, ctl  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


async def test_schedule_commands_define_show_pause_resume_and_delete(ctl: Ctl) -> None:  # noqa: F811
    created = await ctl("-o", "json", "schedule", "create", "reports.nightly", "reports.build", "--cron",
                        "30 2 * * *", "--time-zone", "Europe/Berlin", "--payload", "{}", "--catch-up", "once",
                        "--overlap", "skip")
    assert created.code == 0, created.err
    document = created.json()
    assert isinstance(document, dict) and document["created"] is True
    assert document["schedule"]["catch_up"] == "CATCH_UP_POLICY_ONCE"
    shown = await ctl("-o", "json", "schedule", "get", "reports.nightly", "--next", "3")
    times = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in shown.json()["schedule"]["next_fire_times"]]
    assert len(times) == 3
    assert all(t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") in ("02:30", "03:00") for t in times)
    listed = await ctl("schedule", "list")
    assert "reports.nightly" in listed.out and "30 2 * * * (Europe/Berlin)" in listed.out
    paused = await ctl("-o", "json", "schedule", "pause", "reports.nightly")
    assert paused.json()["schedule"]["paused"] is True and "next_fire_times" not in paused.json()["schedule"]
    resumed = await ctl("schedule", "resume", "reports.nightly")
    assert resumed.code == 0 and "active" in resumed.out
    fires = await ctl("schedule", "fires", "reports.nightly")
    assert fires.code == 0 and fires.out.startswith("FIRE TIME")
    assert (await ctl("schedule", "delete", "reports.nightly")).code == 0
    again = await ctl("schedule", "delete", "reports.nightly")
    assert again.code == 1 and "no schedule named reports.nightly" in again.err
    gone = await ctl("schedule", "get", "reports.nightly")
    assert gone.code == 1 and "not found" in gone.err


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["x.y", "j.t", "--cron", "61 * * * *"], "cron"),
        (["x.y", "j.t", "--cron", "@daily", "--time-zone", "Mars/Base"], "time_zone"),
        (["x.y", "j.t", "--every", "10ms"], "interval"),
        (["x.y", "--workflow", "no.such.flow", "--every", "5s"], "workflow.workflow_name"),
        (["Bad Name", "j.t", "--every", "5s"], "name"),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(ctl: Ctl, args: list[str], field: str) -> None:  # noqa: F811
    result = await ctl("schedule", "create", *args)
    assert result.code == 1 and field in result.err, result.err


async def test_client_defines_job_and_workflow_schedules(ctl: Ctl, db_pool: asyncpg.Pool) -> None:  # noqa: F811
    flow = parse({"name": "etl.flow", "steps": [{"id": "a", "job_type": "etl.a"}]})
    async with db_pool.acquire() as conn:
        await workflows.register(conn, flow, "api")
    async with AsyncClient(ctl.target) as client:
        job, created = await client.put_schedule("every.minute", "sync.run", interval=dt.timedelta(minutes=1),
                                                 catch_up="all", catch_up_limit=10, max_attempts=2)
        assert created and job.interval == dt.timedelta(minutes=1) and job.catch_up == "all"
        same, created_again = await client.put_schedule("every.minute", "sync.run", interval=dt.timedelta(minutes=1),
                                                        catch_up="all", catch_up_limit=10, max_attempts=2)
        assert not created_again and same.next_fire_times == job.next_fire_times  # unchanged: same cursor
        run, _ = await client.put_schedule("etl.hourly", workflow="etl.flow", cron="@hourly",
                                           workflow_input={"day": "today"}, overlap="skip")
        assert run.workflow_name == "etl.flow" and run.job_type == "" and run.overlap == "skip"
        assert [s.name for s in await client.list_schedules()] == ["every.minute", "etl.hourly"]
        with pytest.raises(InvalidArgument, match="catch_up_limit"):
            await client.put_schedule("x.y", "a.b", interval=dt.timedelta(seconds=1), catch_up_limit=20_000)
        assert await client.delete_schedule("etl.hourly")
