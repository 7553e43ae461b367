"""The workflow store on real Postgres: registration versions, starting a run, idempotency, and
the release of steps inside the settle transaction (races included)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from dispatchd.control_plane.workflow_files import WorkflowFiles
from dispatchd.platform.errors import AlreadyExists, NotFound
from dispatchd.platform.states import ExecutionStatus, JobStatus, WorkflowRunStatus
from dispatchd.platform.store import executions, repairs, settlements, workflow_runs, workflows
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.platform.store.settlements import Finished
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


SESSION = uuid.UUID(int=11)


async def _run_to_the_fork(pool: asyncpg.Pool) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A diamond run whose root `a` succeeded: b and c are released, d waits. Step -> job id."""
    async with pool.acquire() as conn:
        await workflows.register(conn, parse(DIAMOND), "api")
        async with conn.transaction():
            started = await workflows.start_run(
                conn, name="test.diamond", version=None, run_input=b'{"x": 2}', idempotency_key=None, submitted_by=None
            )
    rows = await pool.fetch("SELECT step_id, job_id FROM workflow_steps WHERE run_id = $1", started.run_id)
    job_of = {r["step_id"]: r["job_id"] for r in rows}
    assert await _finish(pool, job_of["a"])
    return started.run_id, job_of


async def _finish(pool: asyncpg.Pool, job_id: uuid.UUID, *, success: bool = True) -> list[QueuedRef]:
    """Claim the job's queued execution for SESSION and report its result as the gateway does."""
    execution_id = await pool.fetchval(
        "SELECT execution_id FROM executions WHERE job_id = $1 ORDER BY attempt DESC LIMIT 1", job_id
    )
    (claim,) = await executions.claim(pool, [execution_id], worker_id="w", session_id=SESSION, lease_seconds=30)
    assert claim.step
    report = Finished(execution_id, "w", SESSION, success, b'{"done": true}', "" if success else "boom", step=True)
    async with pool.acquire() as conn, conn.transaction():
        (settled,) = (await settlements.apply(conn, [], [report])).settlements
    assert settled.applied
    return list(settled.released)


async def _statuses(pool: asyncpg.Pool, run_id: uuid.UUID) -> dict[str, JobStatus]:
    rows = await pool.fetch(
        "SELECT s.step_id, j.status FROM workflow_steps s JOIN jobs j USING (job_id) WHERE s.run_id = $1", run_id
    )
    return {r["step_id"]: JobStatus(r["status"]) for r in rows}


async def test_a_released_step_is_queued_in_postgres_so_the_scheduler_repairs_a_lost_push(
    db_pool: asyncpg.Pool,
) -> None:
    run_id, job_of = await _run_to_the_fork(db_pool)
    assert await _statuses(db_pool, run_id) == {
        "a": JobStatus.SUCCEEDED,
        "b": JobStatus.PENDING,
        "c": JobStatus.PENDING,
        "d": JobStatus.WAITING,
    }
    # Nobody pushes what the settlement released: the reconcile pass's query finds it.
    due = {d.execution_id for d in await repairs.due_queued(db_pool, 100)}
    released = await db_pool.fetch(
        "SELECT execution_id FROM executions WHERE job_id = ANY($1::uuid[])", [job_of["b"], job_of["c"]]
    )
    assert {r["execution_id"] for r in released} <= due
    payload = await db_pool.fetchval("SELECT payload FROM jobs WHERE job_id = $1", job_of["b"])
    assert json.loads(payload) == {"input": {"x": 2}, "parents": {"a": {"done": True}}}


async def test_two_parents_finishing_at_once_release_their_child_exactly_once(db_pool: asyncpg.Pool) -> None:
    for _ in range(5):
        run_id, job_of = await _run_to_the_fork(db_pool)
        released = await asyncio.gather(_finish(db_pool, job_of["b"]), _finish(db_pool, job_of["c"]))
        assert sum(len(r) for r in released) == 1
        assert await db_pool.fetchval("SELECT count(*) FROM executions WHERE job_id = $1", job_of["d"]) == 1
        assert (await _statuses(db_pool, run_id))["d"] is JobStatus.PENDING
        await _finish(db_pool, job_of["d"])
        status = await db_pool.fetchval("SELECT status FROM workflow_runs WHERE run_id = $1", run_id)
        assert WorkflowRunStatus(status) is WorkflowRunStatus.SUCCEEDED


async def test_cancelling_a_run_while_a_step_settles_leaves_nothing_of_the_run_running(
    db_pool: asyncpg.Pool,
) -> None:
    run_id, job_of = await _run_to_the_fork(db_pool)
    await _finish(db_pool, job_of["b"])
    execution_id = await db_pool.fetchval("SELECT execution_id FROM executions WHERE job_id = $1", job_of["c"])
    await executions.claim(db_pool, [execution_id], worker_id="w", session_id=SESSION, lease_seconds=30)
    report = Finished(execution_id, "w", SESSION, True, b"{}", step=True)

    async def settle() -> None:
        async with db_pool.acquire() as conn, conn.transaction():
            await settlements.apply(conn, [], [report])

    await asyncio.gather(settle(), workflow_runs.cancel_run(db_pool, run_id, "stop"))
    statuses = await _statuses(db_pool, run_id)
    assert statuses["d"] is JobStatus.CANCELED, statuses
    # Released first or not, nothing of d may still run: any attempt it got was cancelled with it.
    attempts = await db_pool.fetch("SELECT status FROM executions WHERE job_id = $1", job_of["d"])
    assert all(ExecutionStatus(r["status"]) is ExecutionStatus.CANCELED for r in attempts)


async def test_workflow_files_register_at_start_and_a_changed_file_adds_a_version(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("name: test.files\nsteps: [{id: a, job_type: builtin.echo}]\n")
    files = WorkflowFiles(db_pool, str(tmp_path), interval_seconds=1)
    assert await files.sync() == [("test.files", 1)]
    assert await files.sync() == []  # unchanged: not even read again
    path.write_text("name: test.files\nsteps: [{id: a, job_type: builtin.echo, priority: 3}]\n")
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a new mtime even within the clock's tick
    assert await files.sync() == [("test.files", 2)]
    path.write_text("name: test.files\nsteps: [{id: a, job_type: builtin.echo, depends_on: [a]}]\n")
    os.utime(path, ns=(time.time_ns() + 2 * 10**9,) * 2)
    assert await files.sync() == []  # invalid: logged, the versions before stay
    stored = await workflows.list_definitions(db_pool, "test.files")
    assert [(d.version, d.source, d.definition.steps[0].priority) for d in stored] == [
        (2, "file:flow.yaml", 3),
        (1, "file:flow.yaml", 0),
    ]
