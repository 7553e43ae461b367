"""`dispatchctl run`: the `shell` job's payload and its result as a local command's output."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

SHELL_JOB_TYPE = "shell"


def command_line(argv: Sequence[str]) -> str:
    """One argument is taken as a shell command line as-is (pipes, redirections); several
    are quoted word by word so the remote shell sees exactly these arguments."""
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


def payload(argv: Sequence[str]) -> bytes:
    return json.dumps({"command": command_line(argv)}).encode()


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str


def parse_result(data: bytes) -> ShellResult | None:
    """The shell handler's {"exit_code", "stdout", "stderr"}; None if `data` is not one."""
    if not data:
        return None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("exit_code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    stdout = document.get("stdout", "")
    stderr = document.get("stderr", "")
    return ShellResult(
        exit_code=code,
        stdout=stdout if isinstance(stdout, str) else "",
        stderr=stderr if isinstance(stderr, str) else "",
    )


def exit_status(code: int) -> int:
    """A remote exit code as this process's exit status (shells report signals as 128+n;
    a negative code, as Python reports a signal, becomes that too)."""
    if code < 0:
        return min(128 - code, 255)
    return code if code <= 255 else 1
