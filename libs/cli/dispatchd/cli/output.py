"""What the CLI prints: aligned tables and key: value blocks for people, JSON for scripts."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, TextIO

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from dispatchd.cli.durations import format_seconds
from dispatchd.v1 import common_pb2, job_service_pb2

JOB_COLUMNS = ("JOB ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED")
EXECUTION_COLUMNS = ("ATTEMPT", "EXECUTION ID", "STATUS", "WORKER", "QUEUED", "STARTED", "FINISHED", "ERROR")
DEAD_LETTER_COLUMNS = ("JOB ID", "TYPE", "ATTEMPTS", "DEAD-LETTERED", "WORKER", "ERROR")
_MAX_CELL = 60


def job_status(value: int) -> str:
    """`JOB_STATUS_RUNNING` -> `running` (the spelling `list --status` accepts)."""
    return _enum_name(common_pb2.JobStatus, value, "JOB_STATUS_")


def execution_status(value: int) -> str:
    return _enum_name(common_pb2.ExecutionStatus, value, "EXECUTION_STATUS_")


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def when(ts: timestamp_pb2.Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    moment = ts.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def data(value: bytes) -> str:
    """Payloads and results: text when they are UTF-8, otherwise base64 (marked as such)."""
    if not value:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for line in [headers, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def job_rows(jobs: Sequence[common_pb2.Job]) -> list[list[str]]:
    return [
        [
            j.job_id,
            j.job_type,
            job_status(j.status),
            str(j.priority),
            str(j.attempts),
            when(j.created_at, j.HasField("created_at")),
        ]
        for j in jobs
    ]


def execution_rows(executions: Sequence[common_pb2.Execution]) -> list[list[str]]:
    return [
        [
            str(e.attempt),
            e.execution_id,
            execution_status(e.status),
            e.worker_id or "-",
            when(e.queued_at, e.HasField("queued_at")),
            when(e.started_at, e.HasField("started_at")),
            when(e.finished_at, e.HasField("finished_at")),
            _cell(e.error_message) or "-",
        ]
        for e in executions
    ]


def dead_letter_rows(letters: Sequence[job_service_pb2.DeadLetter]) -> list[list[str]]:
    return [
        [
            d.job.job_id,
            d.job.job_type,
            str(d.job.attempts),
            when(d.job.finished_at, d.job.HasField("finished_at")),
            d.execution.worker_id or "-",
            _cell(d.job.error_message) or "-",
        ]
        for d in letters
    ]


def job_block(job: common_pb2.Job, out: TextIO, extra: Sequence[tuple[str, str]] = ()) -> None:
    policy = job.retry_policy
    fields: list[tuple[str, str]] = [
        ("job_id", job.job_id),
        ("job_type", job.job_type),
        ("status", job_status(job.status)),
        *extra,
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {policy.max_attempts}" if policy.max_attempts else str(job.attempts)),
        (
            "retry_backoff",
            f"{format_seconds(_seconds(policy.initial_backoff))} initial, "
            f"{format_seconds(_seconds(policy.max_backoff))} max",
        ),
        (
            "execution_timeout",
            format_seconds(_seconds(job.execution_timeout)) if job.HasField("execution_timeout") else "-",
        ),
        ("run_at", when(job.run_at, job.HasField("run_at"))),
        ("idempotency_key", job.idempotency_key or "-"),
        ("created_at", when(job.created_at, job.HasField("created_at"))),
        ("updated_at", when(job.updated_at, job.HasField("updated_at"))),
        ("finished_at", when(job.finished_at, job.HasField("finished_at"))),
    ]
    fields += [(f"metadata.{k}", v) for k, v in sorted(job.metadata.items())]
    fields.append(("payload", data(job.payload)))
    if job.result:
        fields.append(("result", data(job.result)))
    if job.error_message:
        fields.append(("error", job.error_message))
    key_values(fields, out)


def key_values(fields: Sequence[tuple[str, str]], out: TextIO) -> None:
    """`key: value` lines, values aligned; a multi-line value continues under its first line."""
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        lines = value.splitlines() or [""]
        out.write(f"{key + ':':<{width}} {lines[0]}".rstrip() + "\n")
        for line in lines[1:]:
            out.write(" " * (width + 1) + line + "\n")


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def emit_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def emit_json_line(document: Any, out: TextIO) -> None:
    """One JSON Lines record of a stream, flushed so a reader sees it now."""
    out.write(json.dumps(document, separators=(",", ":")) + "\n")
    out.flush()
