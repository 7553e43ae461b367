"""`submit --from-file`: a JSON Lines file of jobs, one object per line, read before anything is sent.

Invariant: a line means what the same values given to `dispatchctl submit` as flags mean
(field names are the flag names, `-` or `_`); so a file that does not parse, or holds an
unknown field, is a usage error naming its line, and no job of it is submitted.

    {"job_type": "email.send", "payload": "hi", "priority": 5, "idempotency_key": "k1",
     "meta": {"team": "a"}, "max_attempts": 3, "initial_backoff": "500ms", "max_backoff": "1m",
     "execution_timeout": "30s", "delay": "10s"}      # or "run_at": "2030-01-01T00:00:00Z"

`payload` is text (UTF-8); a JSON object or array is sent as its JSON encoding.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from dispatchd.cli.connection import CliError
from dispatchd.cli.durations import parse_seconds, parse_timestamp
from dispatchd.client import JobSpec
from dispatchd.common import names


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {json.dumps(value)}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {json.dumps(value)}")
    return value


def _duration(value: Any) -> dt.timedelta:
    return dt.timedelta(seconds=float(parse_seconds(_text(value))))


def _payload(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _meta(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("expected an object of strings")
    return value


# Field (as the flag is spelled) -> (the client's argument, how to read the value).
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "job_type": ("job_type", lambda v: names.job_type(_text(v), "job_type")),
    "payload": ("payload", _payload),
    "priority": ("priority", _integer),
    "idempotency_key": ("idempotency_key", _text),
    "meta": ("metadata", _meta),
    "max_attempts": ("max_attempts", _integer),
    "initial_backoff": ("initial_backoff", _duration),
    "max_backoff": ("max_backoff", _duration),
    "execution_timeout": ("execution_timeout", _duration),
    "delay": ("delay", _duration),
    "run_at": ("run_at", lambda v: parse_timestamp(_text(v))),
}


def job(line: str) -> JobSpec:
    """One line's job; ValueError saying what is wrong with it."""
    try:
        document = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    spec: dict[str, Any] = {}
    for field, value in document.items():
        name = field.replace("-", "_")
        if name not in _FIELDS:
            raise ValueError(f"unknown field {field!r} (known: {', '.join(_FIELDS)})")
        argument, read = _FIELDS[name]
        try:
            spec[argument] = read(value)
        except (ValueError, names.InvalidName) as exc:
            raise ValueError(f"{field}: {exc}") from None
    if "job_type" not in spec:
        raise ValueError("job_type is required")
    if "delay" in spec and "run_at" in spec:
        raise ValueError("give delay or run_at, not both")
    return cast(JobSpec, spec)


def jobs(lines: Iterable[str], source: str) -> list[tuple[int, JobSpec]]:
    """Every job of the file with its line number (blank lines skipped); CliError (usage,
    exit 2) on the first bad line."""
    found: list[tuple[int, JobSpec]] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                found.append((number, job(line)))
            except ValueError as exc:
                raise CliError(f"{source}:{number}: {exc}", exit_code=2) from None
    if not found:
        raise CliError(f"{source}: no jobs", exit_code=2)
    return found


def read(path: str) -> list[tuple[int, JobSpec]]:
    if path == "-":
        return jobs(sys.stdin, "<stdin>")
    try:
        with open(path, encoding="utf-8") as handle:
            return jobs(handle, path)
    except OSError as exc:
        raise CliError(f"cannot read jobs file {path}: {exc.strerror or exc}") from None
