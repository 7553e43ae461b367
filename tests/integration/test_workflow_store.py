"""The workflow store on real Postgres: registration versions, starting a run, idempotency."""

from __future__ import annotations

import asyncpg
import pytest

from dispatchd.platform.errors import AlreadyExists, NotFound
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import workflows
from dispatchd.platform.workflow_definitions import parse

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DIAMOND = {
    "name": "test.diamond",
    "steps": [
        {"id": "a", "job_type": "builtin.echo", "payload": {"x": {"$ref": "input.x"}}},
        {"id": "b", "job_type": "builtin.echo", "depends_on": ["a"]},
        {"id": "c", "job_type": "builtin.echo", "depends_on": ["a"]},
        {"id": "d", "job_type": "builtin.echo", "depends_on": ["b", "c"]},
    ],
}


async def test_register_versions_only_on_change(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        first, created = await workflows.register(conn, parse(DIAMOND), "api")
        assert (first.version, created) == (1, True)
        again, created = await workflows.register(conn, parse(DIAMOND), "file:x.yaml")
        assert (again.version, created) == (1, False)
        changed = {**DIAMOND, "steps": DIAMOND["steps"][:1]}
        second, created = await workflows.register(conn, parse(changed), "api")
        assert (second.version, created) == (2, True)
        assert [d.version for d in await workflows.list_definitions(conn, "test.diamond")] == [2, 1]


async def test_start_run_creates_every_step_job_and_only_roots_are_due(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await workflows.register(conn, parse(DIAMOND), "api")
        async with conn.transaction():
            started = await workflows.start_run(
                conn, name="test.diamond", version=None, run_input=b'{"x": 1}', idempotency_key="k", submitted_by=None
            )
        rows = await conn.fetch(
            "SELECT s.step_id, j.status, j.payload FROM workflow_steps s JOIN jobs j USING (job_id)"
            " WHERE s.run_id = $1 ORDER BY s.position",
            started.run_id,
        )
        assert [(r["step_id"], JobStatus(r["status"])) for r in rows] == [
            ("a", JobStatus.PENDING),
            ("b", JobStatus.WAITING),
            ("c", JobStatus.WAITING),
            ("d", JobStatus.WAITING),
        ]
        assert rows[0]["payload"] == b'{"x": 1}'
        assert len(started.queued) == 1 and not started.deduplicated
        async with conn.transaction():
            again = await workflows.start_run(
                conn, name="test.diamond", version=None, run_input=b'{"x": 1}', idempotency_key="k", submitted_by=None
            )
        assert (again.run_id, again.deduplicated, again.queued) == (started.run_id, True, [])
        with pytest.raises(AlreadyExists):
            async with conn.transaction():
                await workflows.start_run(
                    conn, name="test.diamond", version=None, run_input=b"{}", idempotency_key="k", submitted_by=None
                )
        with pytest.raises(NotFound):
            await workflows.start_run(
                conn, name="test.none", version=None, run_input=b"", idempotency_key=None, submitted_by=None
            )
