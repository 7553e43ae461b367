"""`dispatchctl workflow list|register|start|get|runs|cancel`, with a live view of a run's steps.

Invariant: these commands only call `dispatchd.client`; a definition file is the same YAML
the control plane loads from its workflows directory (one or more documents per file). The
live view (`get --watch`, `start --follow`) re-reads the run about once a second and redraws
it only when something changed; it ends when the run and all its steps have settled, with
exit status 0 if the run succeeded and 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from dispatchd.cli import output
from dispatchd.cli.commands import Io
from dispatchd.cli.connection import CliError
from dispatchd.client import Client, WorkflowRun, WorkflowRunStatus

WATCH_SECONDS = 1.0
RUN_STATUSES = ("running", "succeeded", "failed", "canceled")
STEP_COLUMNS = ("STEP", "STATUS", "ATTEMPTS", "DEPENDS ON", "RELEASED", "FINISHED", "JOB ID", "ERROR")
RUN_COLUMNS = ("RUN ID", "WORKFLOW", "VERSION", "STATUS", "CREATED", "FINISHED", "ERROR")


def _documents(path: str) -> list[Any]:
    try:
        with sys.stdin if path == "-" else open(path) as handle:
            return [d for d in yaml.safe_load_all(handle) if d is not None]
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", exit_code=2) from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}", exit_code=2) from None


def register(args: argparse.Namespace, client: Client, io: Io) -> int:
    rows = []
    for path in args.files:
        for document in _documents(path):
            try:
                definition, created = client.register_workflow(document)
            except ValueError as exc:  # a key the API has no field for
                raise CliError(f"{path}: {exc}", exit_code=2) from None
            rows.append([definition.name, str(definition.version), "registered" if created else "unchanged", path])
    if io.json:
        output.emit_json([dict(zip(("name", "version", "outcome", "file"), r, strict=True)) for r in rows], io.out)
    else:
        output.table(("WORKFLOW", "VERSION", "OUTCOME", "FILE"), rows, io.out)
    return 0


def list_workflows(args: argparse.Namespace, client: Client, io: Io) -> int:
    definitions = client.workflows(args.name)
    if io.json:
        output.emit_json([output.as_dict(d.raw) for d in definitions], io.out)
        return 0
    rows = [
        [d.name, str(d.version), str(len(d.steps)), " ".join(d.steps), d.source, output.when(d.raw.created_at)]
        for d in definitions
    ]
    output.table(("WORKFLOW", "VERSION", "STEPS", "STEP IDS", "SOURCE", "CREATED"), rows, io.out)
    return 0


def _status(run: WorkflowRun) -> str:
    return run.status.name.lower()


def _show(run: WorkflowRun, io: Io) -> None:
    if io.json:
        output.emit_json(output.as_dict(run.raw), io.out)
        return
    finished = output.when(run.raw.finished_at, run.raw.HasField("finished_at"))
    io.out.write(
        f"run {run.run_id}  {run.workflow_name} v{run.workflow_version}  {_status(run)}  finished {finished}\n"
    )
    if run.error_message:
        io.out.write(f"error: {run.error_message}\n")
    rows = [
        [
            s.step_id,
            output.job_status(s.status),
            str(s.attempts),
            ",".join(s.depends_on) or "-",
            output.when(raw.released_at, raw.HasField("released_at")),
            output.when(raw.finished_at, raw.HasField("finished_at")),
            s.job_id,
            output.data(s.error_message.encode()),
        ]
        for s, raw in zip(run.steps, run.raw.steps, strict=True)
    ]
    output.table(STEP_COLUMNS, rows, io.out)


def _settled(run: WorkflowRun) -> bool:
    return run.status.terminal and all(s.status.terminal for s in run.steps)


def _exit(run: WorkflowRun) -> int:
    return 0 if run.status is WorkflowRunStatus.SUCCEEDED else 1


def watch(fetch: Callable[[], WorkflowRun], io: Io, first: WorkflowRun | None = None) -> int:
    """Redraw the run whenever it changes until it settled; a poll every WATCH_SECONDS."""
    run = first or fetch()
    shown = None
    while True:
        if run.raw != shown:
            if io.out.isatty() and not io.json:
                io.out.write("\x1b[H\x1b[J")  # redraw in place on a terminal
            elif shown is not None:
                io.out.write("\n")
            _show(run, io)
            io.out.flush()
            shown = run.raw
        if _settled(run):
            return _exit(run)
        time.sleep(WATCH_SECONDS)
        run = fetch()


def start(args: argparse.Namespace, client: Client, io: Io) -> int:
    run_input: bytes | None = None
    if args.input is not None:
        run_input = str(args.input).encode()
    elif args.input_file is not None:
        try:
            with open(args.input_file, "rb") as handle:
                run_input = handle.read()
        except OSError as exc:
            raise CliError(f"cannot read input file {args.input_file}: {exc.strerror or exc}") from None
    run, deduplicated = client.start_workflow(
        args.name, run_input, version=args.version, idempotency_key=args.idempotency_key
    )
    if deduplicated and not io.json:
        io.err.write(f"dispatchctl: run {run.run_id} was already started with this idempotency key\n")
    if args.follow:
        return watch(lambda: client.workflow_run(run.run_id), io, run)
    _show(run, io)
    return 0


def get(args: argparse.Namespace, client: Client, io: Io) -> int:
    if args.watch:
        return watch(lambda: client.workflow_run(args.run_id), io)
    _show(client.workflow_run(args.run_id), io)
    return 0


def runs(args: argparse.Namespace, client: Client, io: Io) -> int:
    found: list[WorkflowRun] = []
    token = args.page_token or ""
    while True:
        page = client.workflow_runs(name=args.name, status=args.status, page_size=args.limit, page_token=token)
        found.extend(page.items)
        token = page.next_page_token
        if not (args.all and token):
            break
    if io.json:
        output.emit_json({"runs": [output.as_dict(r.raw) for r in found], "next_page_token": token}, io.out)
        return 0
    rows = [
        [
            r.run_id,
            r.workflow_name,
            str(r.workflow_version),
            _status(r),
            output.when(r.raw.created_at),
            output.when(r.raw.finished_at, r.raw.HasField("finished_at")),
            r.error_message,
        ]
        for r in found
    ]
    output.table(RUN_COLUMNS, rows, io.out)
    if token:
        io.err.write(f"more: --page-token {token}\n")
    return 0


def cancel(args: argparse.Namespace, client: Client, io: Io) -> int:
    _show(client.cancel_workflow(args.run_id, reason=args.reason or ""), io)
    return 0


def _run_status(text: str) -> str:
    value = text.lower().replace("cancelled", "canceled")
    if value not in RUN_STATUSES:
        raise argparse.ArgumentTypeError(f"invalid status {text!r}: choose from {', '.join(RUN_STATUSES)}")
    return value


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """`workflow` and its subcommands, on dispatchctl's subparsers."""
    top = sub.add_parser("workflow", parents=parents, help="workflows: DAGs of jobs (list, register, start, ...)")
    commands = top.add_subparsers(dest="workflow_command", metavar="SUBCOMMAND", required=True)

    def command(name: str, handler: Callable[..., int], summary: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, parents=parents, help=summary)
        p.set_defaults(handler=handler)
        return p

    p = command("list", list_workflows, "latest version of every workflow (or every version of NAME)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p = command("register", register, "register the definitions of YAML files (a new version when changed)")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML definition files ('-' for stdin)")
    p = command("start", start, "start a run")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", type=int, metavar="N", help="definition version (default: the latest)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="JSON", help="the run's input (JSON when templates read it)")
    given.add_argument("--input-file", metavar="PATH", help="the run's input from a file")
    p.add_argument("--idempotency-key", metavar="KEY", help="starting again with the same key returns the same run")
    p.add_argument("--follow", action="store_true", help="show the run's steps live until it settles")
    p = command("get", get, "show a run and its steps")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--watch", action="store_true", help="redraw as the steps change, until the run settles")
    p = command("runs", runs, "list runs, newest first")
    p.add_argument("--name", metavar="NAME", help="only runs of this workflow")
    p.add_argument(
        "--status", type=_run_status, metavar="STATUS", help=f"only runs in this status ({'|'.join(RUN_STATUSES)})"
    )
    p.add_argument("--limit", type=int, metavar="N", help="runs per page (server default 50)")
    p.add_argument("--page-token", metavar="TOKEN", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="follow every page")
    p = command("cancel", cancel, "cancel a run and its active steps")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", metavar="TEXT", help="recorded on the run and its steps")
