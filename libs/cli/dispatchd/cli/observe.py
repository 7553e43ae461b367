"""dispatchctl's observe commands: logs (paged or followed), workers, queues, status, watch.

Invariant, as for the other commands: tables and text for people, `-o json` for scripts — one
JSON document for a finite answer, and one JSON object per line (JSON Lines) for a stream
(`logs --follow`, `watch`), flushed as it arrives so a pipe sees it live.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dispatchd.cli import output
from dispatchd.cli.commands import Io
from dispatchd.cli.connection import CliError
from dispatchd.cli.durations import format_seconds
from dispatchd.client import Client, JobEvent, LogLine, QueueStats, Worker

Register = Callable[..., argparse.ArgumentParser]

WORKER_COLUMNS = ("WORKER", "STATUS", "IN FLIGHT", "CAPABILITIES", "LAST HEARTBEAT", "GATEWAY")
QUEUE_COLUMNS = ("TYPE", "DEPTH", "OLDEST DUE", "DELAYED", "RUNNING")
EVENT_COLUMNS = ("AT", "JOB ID", "TYPE", "EVENT", "STATUS", "ATTEMPT")


def _stamp(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _age(delta: dt.timedelta | None) -> str:
    return "-" if delta is None else format_seconds(round(delta.total_seconds(), 1))


def _emit_lines(lines: Iterable[LogLine], io: Io) -> None:
    for line in lines:
        if io.json:
            output.emit_json_line(output.as_dict(line.raw), io.out)
        else:
            io.out.write(line.message if line.message.endswith("\n") else line.message + "\n")
            io.out.flush()


def logs(args: argparse.Namespace, client: Client, io: Io) -> int:
    if args.job_id is None and args.execution is None:
        raise CliError("logs needs a JOB_ID (or --execution EXECUTION_ID)", 2)
    # The server reads one execution; with both named, check here that it is an attempt of the job.
    if (
        args.job_id
        and args.execution
        and args.execution not in {e.execution_id for e in client.executions(args.job_id)}
    ):
        raise CliError(f"execution {args.execution} is not an attempt of job {args.job_id}")
    target: dict[str, Any] = {"execution_id": args.execution} if args.execution else {"job_id": args.job_id}
    if args.follow:
        _emit_lines(client.follow_logs(**target), io)
    elif io.json:
        found = [output.as_dict(line.raw) for line in client.iter_logs(**target)]
        output.emit_json({"lines": found}, io.out)
    else:
        _emit_lines(client.iter_logs(**target), io)
    return 0


def _listing(field: str, found: Sequence[Any], columns: Sequence[str], row: Callable[[Any], list[str]], io: Io) -> int:
    if io.json:
        output.emit_json({field: [output.as_dict(item.raw) for item in found]}, io.out)
    else:
        output.table(columns, [row(item) for item in found], io.out)
    return 0


def _worker_row(w: Worker) -> list[str]:
    slots = f"{w.in_flight}/{w.max_concurrency}"
    heartbeat = _stamp(w.last_heartbeat_at)
    return [w.worker_id, w.status.name.lower(), slots, ",".join(w.capabilities), heartbeat, w.gateway_id or "-"]


def workers(args: argparse.Namespace, client: Client, io: Io) -> int:
    return _listing("workers", client.workers(include_offline=args.all), WORKER_COLUMNS, _worker_row, io)


def _queue_row(q: QueueStats) -> list[str]:
    return [q.job_type, str(q.depth), _age(q.oldest_due_age), str(q.delayed), str(q.running)]


def queues(args: argparse.Namespace, client: Client, io: Io) -> int:
    return _listing("queues", client.queue_stats(job_type=args.type), QUEUE_COLUMNS, _queue_row, io)


def status(args: argparse.Namespace, client: Client, io: Io) -> int:
    s = client.cluster_status()
    if io.json:
        output.emit_json(output.as_dict(s.raw), io.out)
        return 0
    role = "passive" if s.passive else ("primary" if s.primary else "not primary (read-only)")
    fields = [
        ("region", f"{s.region} ({role})"),
        ("configured_primary", s.configured_primary),
        ("recorded_primary", f"{s.recorded_primary or '-'} (epoch {s.region_epoch})"),
        ("database", "read-only" if s.database_read_only else "writable"),
        ("scheduler_leader", s.leader_id if s.leader_held else "none"),
        ("scheduler_epoch", str(s.leader_epoch)),
        ("lease_remaining", _age(s.lease_remaining)),
    ]
    output.key_values(fields, io.out)
    return 0


def _event_row(e: JobEvent) -> list[str]:
    return [_stamp(e.at), e.job_id, e.job_type, e.kind.name.lower(), e.status.name.lower(), str(e.attempt or "-")]


def watch(args: argparse.Namespace, client: Client, io: Io) -> int:
    """Print job events as they come; stops after --count events (else at Ctrl-C)."""
    seen = 0
    for e in client.watch(job_type=args.type, status=args.status, job_id=args.job):
        if e.gap:
            io.err.write(f"dispatchctl: events may have been lost here ({e.missed} dropped for reading slowly)\n")
        if not e.is_event:
            continue
        if io.json:
            output.emit_json_line(output.as_dict(e.raw.event), io.out)
        else:
            io.out.write("  ".join(_event_row(e)) + "\n")
            io.out.flush()
        seen += 1
        if args.count is not None and seen >= args.count:
            break
    return 0


def register(
    command: Register,
    job_type: Callable[[str], str],
    job_status: Callable[[str], str],
    positive_int: Callable[[str], int],
) -> None:
    """Add the observe commands to dispatchctl's parser (`command` is main's sub-command maker)."""
    p = command("logs", logs, "print a job's log lines (every attempt), or follow them as they are stored")
    p.add_argument("job_id", nargs="?", metavar="JOB_ID")
    p.add_argument("--execution", metavar="EXECUTION_ID", help="only this attempt (JOB_ID may then be left out)")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job (or attempt) has finished"
    )

    p = command("workers", workers, "list the workers connected to the gateways")
    p.add_argument("--all", action="store_true", help="also workers whose stream ended (offline)")

    p = command("queues", queues, "per job type: due work waiting (and the oldest one's age), delayed, running")
    p.add_argument("--type", type=job_type, metavar="JOB_TYPE", help="only this job type")

    command("status", status, "scheduler leadership and this region's primacy")

    p = command("watch", watch, "print job events as they happen (submitted, started, retrying, finished)")
    p.add_argument("--type", type=job_type, metavar="JOB_TYPE", help="only jobs of exactly this type")
    p.add_argument("--status", type=job_status, metavar="STATUS", help="only events leaving the job in this status")
    p.add_argument("--job", metavar="JOB_ID", help="only this job")
    p.add_argument("--count", type=positive_int, metavar="N", help="exit after N events")
