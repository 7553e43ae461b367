"""GitOps schedules: the shipped YAML files validate (JSON Schema and the API's rules), and a
directory of them is applied: created, changed, deleted when removed, kept when a file breaks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import asyncpg
import jsonschema
import pytest
import redis.asyncio
import yaml

from dispatchd.control_plane.schedule_files import ScheduleFiles, load_file, parse
from dispatchd.platform.catch_up import CatchUp, Overlap
from dispatchd.platform.config import Settings
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store import schedules
from tests.support.submissions import PREFIX

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "base" / "schedules"
SCHEMA = json.loads((SHIPPED / "schedule.schema.json").read_text())


def test_shipped_schedules_match_the_schema_and_the_api_rules() -> None:
    documents = list(yaml.safe_load_all((SHIPPED / "examples.yaml").read_text()))
    for doc in documents:
        jsonschema.validate(doc, SCHEMA)
    nightly, heartbeat = load_file(SHIPPED / "examples.yaml", Settings())
    assert (nightly.cron, nightly.time_zone, nightly.catch_up, nightly.overlap) == (
        "30 2 * * *", "Europe/Berlin", CatchUp.ONCE, Overlap.SKIP)
    assert json.loads(nightly.job.payload) == {"report": "nightly"} and nightly.job.retry.max_attempts == 5
    assert heartbeat.interval is not None and heartbeat.interval.total_seconds() == 60
    assert heartbeat.job.payload == b"ping" and nightly.paused and heartbeat.paused


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"kind": "Workflow", "name": "x"}, "kind: Schedule"),
        ({"kind": "Schedule", "name": "x", "cron": "61 * * * *", "job": {"job_type": "a"}}, "cron"),
        ({"kind": "Schedule", "name": "x", "cron": "@daily", "time_zone": "Nowhere/City", "job": {"job_type": "a"}},
         "time_zone"),
        ({"kind": "Schedule", "name": "x", "interval": "5s"}, "target"),
        ({"kind": "Schedule", "name": "x", "interval": "5s", "job": {"job_type": "A B"}}, "job"),
        ({"kind": "Schedule", "name": "x", "interval": "5s", "job": {"job_type": "a"}, "overlap": "never"},
         "overlap"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        parse(doc, Settings())


def write(directory: Path, name: str, docs: list[dict[str, object]]) -> None:
    (directory / name).write_text(yaml.safe_dump_all(docs))


def every(name: str, seconds: int) -> dict[str, object]:
    return {"kind": "Schedule", "name": name, "interval": f"{seconds}s", "job": {"job_type": "files.job"}}


async def test_a_directory_of_schedules_is_applied_and_follows_its_files(
    db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis, tmp_path: Path
) -> None:
    files = ScheduleFiles(Settings(schedules_dir=str(tmp_path)), db_pool, ReadyQueues(redis_client, PREFIX))
    write(tmp_path, "a.yaml", [every("files.a", 60), every("files.b", 30)])
    assert sorted(await files.sync()) == ["files.a", "files.b"]
    assert await files.sync() == []  # nothing changed: nothing read, nothing written
    api = dataclasses.replace(load_file(tmp_path / "a.yaml", Settings())[0], name="api.own",
                              source=schedules.SOURCE_API)
    async with db_pool.acquire() as conn, conn.transaction():
        await schedules.put(conn, api)
    write(tmp_path, "a.yaml", [every("files.a", 120)])
    assert sorted(await files.sync()) == ["files.a", "files.b"]  # a changed, b deleted
    changed = await schedules.get(db_pool, "files.a")
    assert changed.definition.interval is not None and changed.definition.interval.total_seconds() == 120
    (tmp_path / "broken.yaml").write_text("kind: Schedule\nname: files.c\ncron: nonsense\n")
    write(tmp_path, "a.yaml", [])
    assert await files.sync() == []  # a broken file: nothing is deleted
    (tmp_path / "broken.yaml").unlink()
    assert await files.sync() == ["files.a"]
    remaining = [r.name for r in await schedules.list_schedules(db_pool, page_size=10, after=None)]
    assert remaining == ["api.own"]  # API schedules are never touched
