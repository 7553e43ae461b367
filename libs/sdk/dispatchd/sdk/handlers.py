"""Built-in handlers: `shell` (opt-in: --enable-shell) and `builtin.*` for tests and benchmarks.

`shell` runs arbitrary commands on the worker's host, which is why a worker only offers
it when started with --enable-shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dispatchd.sdk.task import HandlerFailed, Task

if TYPE_CHECKING:
    from dispatchd.sdk.worker import Worker

OUTPUT_CAP_BYTES = 256 * 1024
KILL_AFTER_SECONDS = 2.0
# After the shell exits, how long stragglers holding its pipes may keep them open.
PIPE_LINGER_SECONDS = 2.0
READ_CHUNK = 64 * 1024
MAX_LINE_BYTES = 64 * 1024
SHELL = "/bin/sh"


# --------------------------------------------------------------------------- builtins


async def echo(task: Task) -> bytes:
    return task.payload


async def sleep(task: Task) -> dict[str, float]:
    seconds = float((task.json() or {}).get("seconds", 1.0))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def fail(task: Task) -> None:
    raise RuntimeError(f"builtin.fail always fails (attempt {task.attempt})")


async def flaky(task: Task) -> dict[str, int]:
    fail_attempts = int((task.json() or {}).get("fail_attempts", 1))
    if task.attempt <= fail_attempts:
        raise RuntimeError(f"flaky failure on attempt {task.attempt} of {fail_attempts} planned")
    return {"attempt": task.attempt}


def register_builtins(worker: Worker) -> None:
    worker.register("builtin.echo", echo)
    worker.register("builtin.sleep", sleep)
    worker.register("builtin.fail", fail)
    worker.register("builtin.flaky", flaky)


def register_shell(worker: Worker) -> None:
    worker.register("shell", shell)


# --------------------------------------------------------------------------- shell


@dataclass
class ShellCommand:
    command: str
    timeout_seconds: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    @classmethod
    def from_payload(cls, payload: bytes) -> ShellCommand:
        """JSON {"command", "timeout_seconds"?, "env"?, "cwd"?}, or the command as plain text."""
        text = payload.decode()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if not text.strip():
                raise ValueError("shell payload is empty; send a command")
            return cls(command=text)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValueError('shell payload needs a non-empty "command" string')
        timeout = body.get("timeout_seconds")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ValueError('"timeout_seconds" must be a positive number')
        env = body.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError('"env" must map strings to strings')
        cwd = body.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError('"cwd" must be a string')
        return cls(command=command, timeout_seconds=timeout, env=env, cwd=cwd)


class _Capture:
    """The first OUTPUT_CAP_BYTES of a stream; later output is counted, not kept."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> bool:
        """Keep what fits; False once the cap is reached."""
        room = OUTPUT_CAP_BYTES - len(self.data)
        if len(chunk) > room:
            self.data += chunk[: max(room, 0)]
            self.truncated = True
            return False
        self.data += chunk
        return True

    def text(self) -> str:
        return self.data.decode(errors="replace")


async def _pump(reader: asyncio.StreamReader, name: str, capture: _Capture, task: Task) -> None:
    """Copy a pipe into the capture, sending each line as a log chunk (until the cap)."""
    pending = b""
    logging = True
    while chunk := await reader.read(READ_CHUNK):
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:  # a huge line without newline: send what we have
            lines.append(pending)
            pending = b""
        for line in lines:
            if logging:
                logging = capture.add(line + b"\n")
                await task.log(line.decode(errors="replace"), name)
                if not logging:
                    await task.log(f"[{name} truncated at {OUTPUT_CAP_BYTES} bytes]", name)
            else:
                capture.truncated = True
    if pending and logging:
        if capture.add(pending):
            await task.log(pending.decode(errors="replace"), name)
    elif pending:
        capture.truncated = True


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by someone else's group: ours is gone
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a live (non-zombie) member.

    kill(-pgid, 0) also succeeds for zombies that init has not reaped yet, so on Linux
    look at /proc instead.
    """
    if not _signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _exited(process: asyncio.subprocess.Process) -> int:
    """Wait for the shell itself to exit.

    Not `process.wait()`: on Python 3.11 it also waits for every pipe to close, which a
    background child can hold open forever.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # already gone
        pidfd = None
    except (AttributeError, OSError):  # no pidfd support: look periodically
        while process.returncode is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return process.returncode
    if pidfd is not None:
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    # The event loop's child watcher records the exit status a moment after the exit.
    while process.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return process.returncode


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's whole process group, then SIGKILL whatever is left after a grace."""
    pgid = process.pid
    if not _signal_group(pgid, signal.SIGTERM):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_AFTER_SECONDS
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_AFTER_SECONDS):
            await _exited(process)
    # The shell may be gone while its children linger in the group; nothing signals when a
    # group becomes empty, so look.
    while loop.time() < deadline and group_alive(pgid):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if not _signal_group(pgid, signal.SIGKILL):
        return
    # SIGKILL is delivered asynchronously; return once the group is really gone.
    deadline = loop.time() + KILL_AFTER_SECONDS
    while loop.time() < deadline and group_alive(pgid):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def _reaped(process: asyncio.subprocess.Process) -> None:
    """Wait (bounded) until asyncio's child watcher has recorded the shell's exit.

    `_exited` watches a pidfd, which can fire before the watcher reaps the child; a handler
    that returned before that would leave an unreaped child and a transport that warns when
    it is collected (or never learns the exit status if its loop closes first).
    """
    if process.returncode is not None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_AFTER_SECONDS):
            await process.wait()


async def shell(task: Task) -> dict[str, Any]:
    """Run `/bin/sh -c command` in its own process group, streaming its output as logs.

    Returns {"exit_code", "stdout", "stderr", ...}; a non-zero exit or a timeout fails the
    attempt (HandlerFailed carries the same result). Cancelling the task kills the group.
    """
    spec = ShellCommand.from_payload(task.payload)
    process = await asyncio.create_subprocess_exec(
        SHELL,
        "-c",
        spec.command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **spec.env},
        cwd=spec.cwd,
        start_new_session=True,  # a group of its own: a kill reaches every child
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = _Capture(), _Capture()
    pumps = asyncio.gather(
        _pump(process.stdout, "stdout", out, task),
        _pump(process.stderr, "stderr", err, task),
    )
    timed_out = False
    try:
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                exit_code = await _exited(process)
        except TimeoutError:
            timed_out = True
            await _kill_group(process)
            exit_code = process.returncode if process.returncode is not None else -int(signal.SIGKILL)
        try:
            async with asyncio.timeout(PIPE_LINGER_SECONDS):
                await asyncio.shield(pumps)
        except TimeoutError:  # a background child still holds the pipes
            await _kill_group(process)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PIPE_LINGER_SECONDS):
                    await asyncio.shield(pumps)
    except BaseException:
        await asyncio.shield(_kill_group(process))
        raise
    finally:
        pumps.cancel()
        await asyncio.gather(pumps, return_exceptions=True)
        await asyncio.shield(_reaped(process))
    result: dict[str, Any] = {
        "exit_code": exit_code,
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
    }
    if timed_out:
        result["timed_out"] = True
        raise HandlerFailed(f"timed out after {spec.timeout_seconds}s", result=result)
    if exit_code != 0:
        raise HandlerFailed(f"exit code {exit_code}", result=result)
    return result
