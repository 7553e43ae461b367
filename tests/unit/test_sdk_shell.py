"""The shell handler, with real /bin/sh commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from dispatchd.sdk import HandlerFailed, Task
from dispatchd.sdk.handlers import OUTPUT_CAP_BYTES, group_alive, shell


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: str, stream: str) -> None:
        self.lines.append((stream, message))
        self.changed.set()

    async def first(self, stream: str) -> str:
        while True:
            for s, message in self.lines:
                if s == stream:
                    return message
            self.changed.clear()
            await self.changed.wait()


def _task(payload: Any, logs: Logs | None = None) -> Task:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    task = Task(execution_id="e", job_id="j", job_type="shell", payload=body, attempt=1)
    if logs is not None:
        task._log_sink = logs
    return task


def _group_alive(pgid: int) -> bool:
    return group_alive(pgid)


async def test_success_returns_output_and_streams_lines() -> None:
    logs = Logs()
    result = await shell(_task({"command": "echo one; echo two >&2; printf 'three'"}, logs))
    assert result["exit_code"] == 0
    assert result["stdout"] == "one\nthree" and result["stderr"] == "two\n"
    assert not result["stdout_truncated"] and not result["stderr_truncated"]
    assert sorted(logs.lines) == [("stderr", "two"), ("stdout", "one"), ("stdout", "three")]


async def test_plain_text_payload_env_and_cwd(tmp_path: Path) -> None:
    assert (await shell(_task(b"echo plain")))["stdout"] == "plain\n"
    result = await shell(_task({"command": 'echo "$GREETING"; pwd', "env": {"GREETING": "hi"}, "cwd": str(tmp_path)}))
    assert result["stdout"] == f"hi\n{tmp_path}\n"


async def test_nonzero_exit_fails_with_the_result() -> None:
    with pytest.raises(HandlerFailed) as info:
        await shell(_task({"command": "echo out; echo err >&2; exit 3"}))
    assert info.value.message == "exit code 3"
    assert info.value.result == {
        "exit_code": 3,
        "stdout": "out\n",
        "stderr": "err\n",
        "stdout_truncated": False,
        "stderr_truncated": False,
    }


async def test_output_is_capped() -> None:
    logs = Logs()
    result = await shell(_task({"command": f"head -c {OUTPUT_CAP_BYTES * 2} /dev/zero | tr '\\0' 'a'"}, logs))
    assert result["stdout_truncated"] is True
    assert len(result["stdout"]) == OUTPUT_CAP_BYTES
    assert logs.lines[-1] == ("stdout", f"[stdout truncated at {OUTPUT_CAP_BYTES} bytes]")


async def test_cancel_kills_the_whole_process_group() -> None:
    logs = Logs()
    # The shell leads its own group ($$ is the group id); `sleep` is a child in it.
    running = asyncio.create_task(shell(_task({"command": "echo $$; sleep 30; echo never"}, logs)))
    pgid = int(await asyncio.wait_for(logs.first("stdout"), 5))
    assert _group_alive(pgid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)
    assert not _group_alive(pgid)


async def test_children_ignoring_sigterm_are_killed() -> None:
    logs = Logs()
    command = "trap '' TERM; echo $$; sleep 30 & wait"
    running = asyncio.create_task(shell(_task({"command": command}, logs)))
    pgid = int(await asyncio.wait_for(logs.first("stdout"), 5))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 6)
    assert not _group_alive(pgid)


async def test_timeout_kills_and_fails() -> None:
    logs = Logs()
    with pytest.raises(HandlerFailed) as info:
        await asyncio.wait_for(shell(_task({"command": "echo $$; sleep 30", "timeout_seconds": 0.3}, logs)), 5)
    assert info.value.message == "timed out after 0.3s"
    result: Any = info.value.result
    assert result["timed_out"] is True and result["exit_code"] != 0
    assert not _group_alive(int(logs.lines[0][1]))


async def test_background_children_do_not_hang_the_handler() -> None:
    logs = Logs()
    result = await asyncio.wait_for(shell(_task({"command": "echo $$; sleep 30 &"}, logs)), 8)
    assert result["exit_code"] == 0
    assert not _group_alive(int(logs.lines[0][1]))
