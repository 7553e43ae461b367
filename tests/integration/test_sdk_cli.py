"""`dispatchd-worker` as its own process: the shell handler, opt-in, and signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Callable

import asyncpg
import pytest
import redis.asyncio

from dispatchd.devtools.stack import ServiceProcess, python_module_argv
from dispatchd.platform.states import JobStatus
from dispatchd.platform.store import jobs
from dispatchd.platform.store.rows import JobRow
from tests.support.gateway import Gateway
from tests.support.polling import eventually
from tests.support.submissions import submit

pytestmark = pytest.mark.integration

StartWorker = Callable[..., ServiceProcess]


@pytest.fixture
def start_worker(gateway: Gateway, spawn_service: Callable[..., ServiceProcess]) -> StartWorker:
    def start(worker_id: str, *args: str) -> ServiceProcess:
        argv = [
            *python_module_argv("dispatchd.sdk.cli"),
            "--target",
            gateway.target,
            "--worker-id",
            worker_id,
            "--heartbeat-seconds",
            "1",
            *args,
        ]
        return spawn_service(worker_id, argv, {"DISPATCHD_LOG_LEVEL": "INFO"})

    return start


async def _registered(pool: asyncpg.Pool, worker_id: str) -> list[str]:
    async def online() -> bool:
        return bool(await pool.fetchval("SELECT status = 1 FROM workers WHERE worker_id = $1", worker_id))

    await eventually(online, 20)
    capabilities: list[str] = await pool.fetchval("SELECT capabilities FROM workers WHERE worker_id = $1", worker_id)
    return capabilities


async def _finished(pool: asyncpg.Pool, job_id: uuid.UUID) -> JobRow:
    async def done() -> bool:
        return jobs.is_terminal((await jobs.get(pool, job_id)).status)

    await eventually(done, 15)
    return await jobs.get(pool, job_id)


async def test_shell_worker_runs_commands_and_streams_logs(
    start_worker: StartWorker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    start_worker("shell-worker", "--enable-shell")
    assert await _registered(db_pool, "shell-worker") == ["shell"]
    command = {"command": 'echo "hello $NAME"; echo warn >&2; echo bye', "env": {"NAME": "you"}}
    ok = (await submit(db_pool, redis_client, "shell", json.dumps(command).encode())).job.job_id
    failing = (await submit(db_pool, redis_client, "shell", b"echo partial; exit 4", max_attempts=1)).job.job_id

    job = await _finished(db_pool, ok)
    assert job.status is JobStatus.SUCCEEDED
    result = json.loads(job.result or b"")
    assert result["exit_code"] == 0 and result["stdout"] == "hello you\nbye\n" and result["stderr"] == "warn\n"
    rows = await db_pool.fetch(
        "SELECT l.stream, l.message FROM execution_logs l JOIN executions e USING (execution_id)"
        " WHERE e.job_id = $1 ORDER BY l.log_id",
        ok,
    )
    lines = [(r["stream"], r["message"]) for r in rows]
    assert [line for line in lines if line[0] == "stdout"] == [("stdout", "hello you"), ("stdout", "bye")]
    assert ("stderr", "warn") in lines

    job = await _finished(db_pool, failing)
    assert job.status is JobStatus.FAILED and job.error_message == "exit code 4"
    execution = await db_pool.fetchrow("SELECT result FROM executions WHERE job_id = $1", failing)
    assert execution is not None
    assert json.loads(execution["result"])["stdout"] == "partial\n"


async def test_worker_without_enable_shell_does_not_offer_shell(
    start_worker: StartWorker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    start_worker("plain-worker", "--builtins")
    capabilities = await _registered(db_pool, "plain-worker")
    assert "shell" not in capabilities and "builtin.echo" in capabilities
    shell_job = (await submit(db_pool, redis_client, "shell", b"echo should-not-run")).job.job_id
    echo_job = (await submit(db_pool, redis_client, "builtin.echo", b"hi")).job.job_id
    assert (await _finished(db_pool, echo_job)).result == b"hi"
    await asyncio.sleep(0.3)
    assert (await jobs.get(db_pool, shell_job)).status is JobStatus.PENDING


async def test_sigterm_stops_the_worker_gracefully(
    start_worker: StartWorker, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    worker = start_worker("term-worker", "--builtins", "--grace-seconds", "10")
    await _registered(db_pool, "term-worker")
    job_id = (await submit(db_pool, redis_client, "builtin.sleep", b'{"seconds": 0.7}')).job.job_id

    async def running() -> bool:
        return (await jobs.get(db_pool, job_id)).status is JobStatus.RUNNING

    await eventually(running, 10)
    os.kill(worker.pid, signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0
    assert (await jobs.get(db_pool, job_id)).status is JobStatus.SUCCEEDED
    assert await db_pool.fetchval("SELECT status FROM workers WHERE worker_id = 'term-worker'") == 4


async def test_rejected_registration_exits_non_zero(start_worker: StartWorker) -> None:
    worker = start_worker("Bad Id " + "x" * 200, "--builtins")
    assert await asyncio.to_thread(worker.wait, 15) == 1
    assert "registration rejected" in worker.log_tail()
