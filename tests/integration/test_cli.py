"""dispatchctl as a subprocess against the control plane running as its own process."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from dispatchd.devtools.stores import free_port
from tests.support.factories import StartControlPlane
from tests.support.submissions import complete

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Ctl:
    target: str

    async def start(self, *args: str, target: str | None = None) -> asyncio.subprocess.Process:
        env = {"DISPATCHD_CONTROL_PLANE_TARGET": target or self.target, "PYTHONUNBUFFERED": "1"}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatchd.cli.main",
            *args,
            env={**_base_env(), **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def finish(self, process: asyncio.subprocess.Process, timeout: float = 30) -> Result:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def __call__(self, *args: str, target: str | None = None) -> Result:
        return await self.finish(await self.start(*args, target=target))


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@pytest.fixture
def ctl(start_control_plane: StartControlPlane) -> Ctl:
    target = f"127.0.0.1:{free_port()}"
    start_control_plane(target)
    return Ctl(target)


async def submitted_id(ctl: Ctl, *args: str) -> str:
    result = await ctl("-o", "json", "submit", *args)
    assert result.code == 0, result.err
    document = result.json()
    assert isinstance(document, dict)
    return str(document["job"]["job_id"])


async def job_of_type(pool: asyncpg.Pool, job_type: str) -> str:
    async with asyncio.timeout(15):
        while True:
            job_id = await pool.fetchval("SELECT job_id::text FROM jobs WHERE job_type = $1", job_type)
            if job_id is not None:
                return str(job_id)
            await asyncio.sleep(0.05)


async def test_submit_get_and_list(ctl: Ctl) -> None:
    result = await ctl(
        "submit",
        "email.send",
        "--payload",
        '{"to": "a@example.com"}',
        "--priority",
        "5",
        "--meta",
        "tenant=acme",
        "--max-attempts",
        "4",
        "--initial-backoff",
        "500ms",
        "--max-backoff",
        "1m",
        "--idempotency-key",
        "cli-1",
    )
    assert result.code == 0, result.err
    block = dict(line.split(":", 1) for line in result.out.splitlines())
    job_id = block["job_id"].strip()
    uuid.UUID(job_id)
    assert block["status"].strip() == "pending"
    assert block["attempts"].strip() == "1 of 4"
    assert block["retry_backoff"].strip() == "500ms initial, 1m max"
    assert block["metadata.tenant"].strip() == "acme"
    assert block["payload"].strip() == '{"to": "a@example.com"}'

    again = await ctl("-o", "json", "submit", "email.send", "--payload", '{"to": "a@example.com"}', "--priority", "5",
                      "--meta", "tenant=acme", "--max-attempts", "4", "--initial-backoff", "500ms",
                      "--max-backoff", "1m", "--idempotency-key", "cli-1")  # fmt: skip
    assert again.code == 0, again.err
    document = again.json()
    assert isinstance(document, dict)
    assert document["deduplicated"] is True and document["job"]["job_id"] == job_id

    got = await ctl("get", job_id, "--output", "json")
    assert got.code == 0, got.err
    job = got.json()
    assert isinstance(job, dict)
    assert job["job_id"] == job_id and job["status"] == "JOB_STATUS_PENDING" and job["priority"] == 5
    assert job["retry_policy"] == {"max_attempts": 4, "initial_backoff": "0.500s", "max_backoff": "60s"}

    binary = await submitted_id(ctl, "blob.store", "--payload-file", "/proc/self/cmdline")  # contains NUL bytes
    shown = await ctl("get", binary)
    assert shown.code == 0 and "payload:" in shown.out

    listed = await ctl("list")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].split() == ["JOB", "ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [binary, job_id]  # newest first
    assert lines[0].index("TYPE") == lines[1].index("blob.store") == lines[2].index("email.send")

    as_json = await ctl("list", "-o", "json", "--type", "email.send")
    document = as_json.json()
    assert isinstance(document, dict)
    assert [j["job_id"] for j in document["jobs"]] == [job_id]
    assert document["next_page_token"] == ""


async def test_list_pages_and_filters(ctl: Ctl) -> None:
    ids = [await submitted_id(ctl, "report.daily") for _ in range(3)]
    first = await ctl("list", "--limit", "2")
    assert first.code == 0
    assert len(first.out.splitlines()) == 3
    assert "--page-token" in first.err
    token = first.err.split("--page-token ")[1].split()[0]
    rest = await ctl("list", "--limit", "2", "--page-token", token, "-o", "json")
    document = rest.json()
    assert isinstance(document, dict)
    assert [j["job_id"] for j in document["jobs"]] == [ids[0]]

    everything = await ctl("-o", "json", "list", "--limit", "1", "--all")
    document = everything.json()
    assert isinstance(document, dict)
    assert [j["job_id"] for j in document["jobs"]] == ids[::-1]

    await ctl("cancel", ids[1])
    cancelled = await ctl("list", "--status", "cancelled", "-o", "json")
    document = cancelled.json()
    assert isinstance(document, dict)
    assert [j["job_id"] for j in document["jobs"]] == [ids[1]]
    none = await ctl("list", "--status", "running")
    assert none.out.splitlines()[1:] == []
    keyed = await submitted_id(ctl, "report.daily", "--idempotency-key", "nightly-7")
    by_key = (await ctl("list", "--idempotency-key", "nightly-7", "-o", "json")).json()
    assert isinstance(by_key, dict) and [j["job_id"] for j in by_key["jobs"]] == [keyed]
    later = (await ctl("list", "--since", by_key["jobs"][0]["created_at"], "-o", "json")).json()
    assert isinstance(later, dict) and [j["job_id"] for j in later["jobs"]] == [keyed]


async def test_cancel_and_executions(ctl: Ctl, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    job_id = await submitted_id(ctl, "email.send")
    cancelled = await ctl("cancel", job_id, "--reason", "changed my mind")
    assert cancelled.code == 0, cancelled.err
    assert "status:" in cancelled.out and "canceled" in cancelled.out
    assert "changed my mind" in cancelled.out

    table = await ctl("executions", job_id)
    assert table.code == 0, table.err
    header, row = table.out.splitlines()
    assert header.split()[:4] == ["ATTEMPT", "EXECUTION", "ID", "STATUS"]
    assert row.split()[0] == "1" and row.split()[2] == "canceled"

    as_json = await ctl("executions", job_id, "-o", "json")
    document = as_json.json()
    assert isinstance(document, dict)
    assert [e["status"] for e in document["executions"]] == ["EXECUTION_STATUS_CANCELED"]

    done = await submitted_id(ctl, "email.send")
    await complete(db_pool, redis_client, done, b"ok")
    refused = await ctl("cancel", done)
    assert refused.code == 1
    assert refused.err == (
        f"dispatchctl: error: FAILED_PRECONDITION: job {done} is already succeeded; it cannot be cancelled\n"
    )


async def test_errors_are_one_line_with_exit_status(ctl: Ctl) -> None:
    missing = str(uuid.uuid4())
    result = await ctl("get", missing)
    assert (result.code, result.out, result.err) == (1, "", f"dispatchctl: error: NOT_FOUND: job {missing} not found\n")

    result = await ctl("executions", "nope")
    assert result.code == 1
    assert result.err.startswith("dispatchctl: error: INVALID_ARGUMENT: job_id must be a UUID")

    result = await ctl("submit", "Bad Type")  # the control plane's rule, applied before any call
    assert result.code == 2 and "JOB_TYPE 'Bad Type' is not a valid job type" in result.err

    result = await ctl("submit", "a.b", "--priority", "-1")
    assert result.err == "dispatchctl: error: INVALID_ARGUMENT: priority must be between 0 and 1000, got -1\n"

    port = free_port()
    result = await ctl("list", target=f"127.0.0.1:{port}")
    unreachable = f"dispatchctl: error: cannot reach the control plane at 127.0.0.1:{port} (is it running?)\n"
    assert (result.code, result.err) == (1, unreachable)

    result = await ctl("--target", f"127.0.0.1:{port}", "get", missing)
    assert result.code == 1 and "cannot reach the control plane" in result.err

    for usage in (["list", "--status", "sleeping"], ["submit"], [], ["submit", "x", "--initial-backoff", "soon"]):
        result = await ctl(*usage)
        assert result.code == 2, usage
        assert result.out == ""


async def test_wait_and_submit_wait(ctl: Ctl, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    job_id = await submitted_id(ctl, "email.send")
    timed_out = await ctl("wait", job_id, "--timeout", "300ms")
    assert timed_out.code == 1
    assert timed_out.err == f"dispatchctl: job {job_id} is still pending after 300ms\n"

    waiting = await ctl.start("-o", "json", "submit", "thumbnail.render", "--payload", "img", "--wait")
    waited_id = await job_of_type(db_pool, "thumbnail.render")
    await complete(db_pool, redis_client, waited_id, b"rendered")
    result = await ctl.finish(waiting)
    assert result.code == 0, result.err
    document = result.json()
    assert isinstance(document, dict)
    assert document["terminal"] is True
    assert document["job"]["status"] == "JOB_STATUS_SUCCEEDED"

    shown = await ctl("wait", waited_id)
    assert shown.code == 0 and "result:" in shown.out and "rendered" in shown.out


async def test_run_prints_the_command_output_and_exits_with_its_status(
    ctl: Ctl, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis
) -> None:
    running = await ctl.start("run", "--", "sh", "-c", "echo hi; exit 3")
    job_id = await job_of_type(db_pool, "shell")
    payload = json.loads(await db_pool.fetchval("SELECT payload FROM jobs WHERE job_id = $1", uuid.UUID(job_id)))
    assert payload == {"command": "sh -c 'echo hi; exit 3'"}
    assert await db_pool.fetchval("SELECT max_attempts FROM jobs WHERE job_id = $1", uuid.UUID(job_id)) == 1
    outcome = {"exit_code": 3, "stdout": "hi\n", "stderr": "careful\n"}
    await complete(db_pool, redis_client, job_id, json.dumps(outcome).encode(), ok=False)
    result = await ctl.finish(running)
    assert (result.code, result.out, result.err) == (3, "hi\n", "careful\n")


async def test_run_of_a_successful_command(ctl: Ctl, db_pool: asyncpg.Pool, redis_client: redis.asyncio.Redis) -> None:
    running = await ctl.start("-o", "json", "run", "echo ok | tr a-z A-Z")
    job_id = await job_of_type(db_pool, "shell")
    payload = json.loads(await db_pool.fetchval("SELECT payload FROM jobs WHERE job_id = $1", uuid.UUID(job_id)))
    assert payload == {"command": "echo ok | tr a-z A-Z"}
    await complete(db_pool, redis_client, job_id, b'{"exit_code": 0, "stdout": "OK\\n", "stderr": ""}')
    result = await ctl.finish(running)
    assert result.code == 0, result.err
    document = result.json()
    assert isinstance(document, dict)
    assert document["job_id"] == job_id and document["status"] == "JOB_STATUS_SUCCEEDED"


async def test_submit_from_file_in_batches(ctl: Ctl, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    lines = [
        {"job_type": "file.a", "payload": "one", "priority": 5, "meta": {"n": "1"}, "idempotency-key": "f1"},
        {"job_type": "file.b", "payload": {"to": "x"}, "max_attempts": 2, "initial_backoff": "500ms", "delay": "1s"},
        {"job_type": "file.a", "payload": "again", "idempotency_key": "f1"},  # the key of line 1, another request
        {"job_type": "file.c"},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[3]) + "\n")
    result = await ctl("-o", "json", "submit", "--from-file", str(jobs), "--batch-size", "2")
    assert result.code == 0, result.err
    outcomes = result.json()["results"]  # type: ignore[index]
    assert [(o["line"], o["status"], o["deduplicated"]) for o in outcomes] == [
        (1, "pending", False),
        (2, "pending", False),
        (4, "pending", False),
    ]
    rows = {
        r["job_type"]: r
        for r in await db_pool.fetch("SELECT job_type, payload, priority, metadata, max_attempts, run_at FROM jobs")
    }
    assert (rows["file.a"]["payload"], rows["file.a"]["priority"], rows["file.a"]["metadata"]) == (
        b"one",
        5,
        {"n": "1"},
    )
    assert (rows["file.b"]["payload"], rows["file.b"]["max_attempts"]) == (b'{"to":"x"}', 2)
    assert rows["file.b"]["run_at"] is not None and set(rows) == {"file.a", "file.b", "file.c"}

    # Resubmitted with a conflicting line: the others are deduplicated, that one refused, exit 1.
    jobs.write_text("\n".join(json.dumps(line) for line in lines[:3]) + "\n")
    result = await ctl("submit", "--from-file", str(jobs))
    assert result.code == 1
    table = result.out.splitlines()
    assert "deduplicated" in table[1] and "refused: ALREADY_EXISTS" in table[3], result.out
    assert "1 of 3 job(s) refused" in result.err


async def test_submit_from_a_bad_file_submits_nothing(ctl: Ctl, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"job_type": "file.a"}\n{"job_type": "file.a", "colour": "red"}\n')
    result = await ctl("submit", "--from-file", str(jobs))
    assert result.code == 2 and f"{jobs}:2: unknown field 'colour'" in result.err, result.err
    result = await ctl("submit", "file.a", "--from-file", str(jobs))
    assert result.code == 2 and "--from-file" in result.err
    assert await db_pool.fetchval("SELECT count(*) FROM jobs") == 0
