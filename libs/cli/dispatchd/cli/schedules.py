"""`dispatchctl schedule list|create|get|pause|resume|delete|fires`: schedules from the shell.

Invariant: each action is one client call (list: every page) and prints either a table or,
with `-o json`, the API's own messages as JSON; the exit status is 0 unless the call failed
(or `delete` found nothing to delete: 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from dispatchd.cli import output
from dispatchd.cli.commands import Io
from dispatchd.cli.connection import CliError
from dispatchd.cli.durations import duration_arg
from dispatchd.client import Client, Schedule, ScheduleFire
from dispatchd.common.arguments import key_value

COLUMNS = ("NAME", "WHEN", "STARTS", "STATE", "NEXT FIRE", "LAST FIRE", "LAST STARTED")


def _stamp(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _timing(s: Schedule) -> str:
    if s.cron is not None:
        return f"{s.cron} ({s.time_zone or 'UTC'})"
    return f"every {s.interval}"


def _target(s: Schedule) -> str:
    return s.job_type or f"workflow {s.workflow_name}"


def _started(f: ScheduleFire) -> str:
    if f.error:
        return f"(failed: {f.error})"
    return f.job_id or (f"run {f.run_id}" if f.run_id else "(skipped: previous one still active)")


def _row(s: Schedule) -> list[str]:
    last = s.last_fire
    return [s.name, _timing(s), _target(s), "paused" if s.paused else "active",
            _stamp(s.next_fire_times[0] if s.next_fire_times else None),
            _stamp(last.fire_time if last else None), _started(last) if last else "-"]


def _show(schedules: Sequence[Schedule], io: Io) -> None:
    if io.json:
        output.emit_json([output.as_dict(s.raw) for s in schedules], io.out)
    else:
        output.table(COLUMNS, [_row(s) for s in schedules], io.out)


def _one(s: Schedule, io: Io, created: bool | None = None) -> int:
    if io.json:
        document: dict[str, Any] = {"schedule": output.as_dict(s.raw)}
        if created is not None:
            document["created"] = created
        output.emit_json(document, io.out)
        return 0
    lines = [("name", s.name), ("when", _timing(s)), ("starts", _target(s)),
             ("state", "paused" if s.paused else "active"), ("catch-up", f"{s.catch_up} (limit {s.catch_up_limit})"),
             ("overlap", s.overlap), ("source", s.source)]
    if created is not None:
        lines.append(("created", "yes" if created else "no (replaced or unchanged)"))
    lines += [("next fire", _stamp(t)) for t in s.next_fire_times]
    if s.last_fire is not None:
        lines.append(("last fire", f"{_stamp(s.last_fire.fire_time)} {_started(s.last_fire)}"))
    for key, value in lines:
        io.out.write(f"{key + ':':<12} {value}\n")
    return 0


def list_schedules(args: argparse.Namespace, client: Client, io: Io) -> int:
    _show(client.list_schedules(), io)
    return 0


def create(args: argparse.Namespace, client: Client, io: Io) -> int:
    if (args.job_type is None) == (args.workflow is None):
        raise CliError("schedule create: give JOB_TYPE or --workflow NAME", exit_code=2)
    schedule, created = client.put_schedule(
        args.name, args.job_type, workflow=args.workflow, workflow_version=args.workflow_version,
        workflow_input=args.input, cron=args.cron, interval=args.every, time_zone=args.time_zone or "",
        payload=args.payload, catch_up=args.catch_up, catch_up_limit=args.catch_up_limit or 0,
        overlap=args.overlap, paused=args.paused, priority=args.priority, metadata=dict(args.meta or []),
        max_attempts=args.max_attempts, execution_timeout=args.execution_timeout,
    )
    return _one(schedule, io, created)


def get(args: argparse.Namespace, client: Client, io: Io) -> int:
    return _one(client.get_schedule(args.name, next_fires=args.next), io)


def pause(args: argparse.Namespace, client: Client, io: Io) -> int:
    return _one(client.pause_schedule(args.name), io)


def resume(args: argparse.Namespace, client: Client, io: Io) -> int:
    return _one(client.resume_schedule(args.name), io)


def delete(args: argparse.Namespace, client: Client, io: Io) -> int:
    deleted = client.delete_schedule(args.name)
    if io.json:
        output.emit_json({"deleted": deleted}, io.out)
    elif deleted:
        io.out.write(f"deleted schedule {args.name}\n")
    else:
        io.err.write(f"dispatchctl: no schedule named {args.name}\n")
    return 0 if deleted else 1


def _fire_row(f: ScheduleFire) -> list[str]:
    return [_stamp(f.fire_time), _stamp(f.fired_at), _started(f)]


def fires(args: argparse.Namespace, client: Client, io: Io) -> int:
    found = client.schedule_fires(args.name, limit=args.limit)
    if io.json:
        output.emit_json([{"fire_time": f.fire_time.isoformat(), "fired_at": _stamp(f.fired_at),
                           "job_id": f.job_id, "run_id": f.run_id, "error": f.error} for f in found], io.out)
    else:
        output.table(("FIRE TIME", "FIRED AT", "STARTED"), [_fire_row(f) for f in found], io.out)
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add `schedule` and its actions to dispatchctl's subcommands."""
    top = sub.add_parser("schedule", parents=common, help="define, list, pause, resume and delete schedules")
    actions = top.add_subparsers(dest="schedule_action", metavar="ACTION", required=True)

    def action(name: str, handler: Callable[..., int], summary: str, named: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, parents=common, help=summary, description=summary)
        p.set_defaults(handler=handler)
        if named:
            p.add_argument("name", metavar="NAME")
        return p

    action("list", list_schedules, "list schedules with their next and last fire", named=False)
    p = action("create", create, "create a schedule, or replace the one of this name")
    p.add_argument("job_type", nargs="?", metavar="JOB_TYPE", help="the job every fire submits")
    p.add_argument("--workflow", metavar="NAME", help="instead of a job: every fire starts a run of this workflow")
    p.add_argument("--workflow-version", type=int, default=0, metavar="N", help="with --workflow (default: latest)")
    p.add_argument("--input", metavar="TEXT", help="with --workflow: the run's input (JSON text)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="5-field cron expression or @hourly, @daily, ...")
    when.add_argument("--every", type=duration_arg, metavar="DUR", help="fixed interval, e.g. 30s, 5m")
    p.add_argument("--time-zone", metavar="TZ", help="IANA time zone of --cron (default UTC)")
    p.add_argument("--payload", metavar="TEXT", help="payload of each job (UTF-8)")
    p.add_argument("--catch-up", choices=("skip", "once", "all"), default="skip",
                   help="missed fire times after downtime: skip them, run once, or run all (default skip)")
    p.add_argument("--catch-up-limit", type=int, metavar="N", help="with --catch-up all: at most N (default 100)")
    p.add_argument("--overlap", choices=("allow", "skip"), default="allow",
                   help="skip a fire while the previous job is still active (default allow)")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.add_argument("--priority", type=int, default=0, help="0..1000 (default 0)")
    p.add_argument("--meta", type=key_value("metadata"), action="append", metavar="KEY=VALUE",
                   help="metadata entry of each job (repeatable)")
    p.add_argument("--max-attempts", type=int, metavar="N", help="attempts of each job (default 3)")
    p.add_argument("--execution-timeout", type=duration_arg, metavar="DUR", help="bound on one attempt")
    p = action("get", get, "show a schedule with its next fire times")
    p.add_argument("--next", type=int, default=5, metavar="N", help="how many next fire times (default 5)")
    action("pause", pause, "pause a schedule")
    action("resume", resume, "resume a schedule from now (paused fire times are not caught up)")
    action("delete", delete, "delete a schedule (its jobs stay)")
    p = action("fires", fires, "list a schedule's latest fires and the jobs they started")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")
