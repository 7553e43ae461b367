"""The dispatchctl commands, on `dispatchd.client`. Each returns the process exit status."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from dispatchd.cli import jobfile, output, shell
from dispatchd.cli.connection import CliError
from dispatchd.cli.durations import format_seconds
from dispatchd.client import BatchOutcome, Client, DeadLetter, DispatchdError, Job, JobStatus, Page


@dataclass
class Io:
    out: TextIO
    err: TextIO
    json: bool


Command = Callable[[argparse.Namespace, Client, Io], int]


def _read_payload(args: argparse.Namespace) -> bytes:
    if args.payload is not None:
        return str(args.payload).encode()
    if args.payload_file is None:
        return b""
    if args.payload_file == "-":
        return sys.stdin.buffer.read()
    try:
        with open(args.payload_file, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read payload file {args.payload_file}: {exc.strerror or exc}") from None


def _show_job(job: Job, io: Io, extra: list[tuple[str, str]] | None = None) -> None:
    if io.json:
        output.emit_json(output.as_dict(job.raw), io.out)
    else:
        output.job_block(job.raw, io.out, extra or [])


def _waited(job: Job, deduplicated: bool = False) -> dict[str, Any]:
    """What `-o json` printed for a WaitJob reply: the job, and `terminal` when it is."""
    document: dict[str, Any] = {"job": output.as_dict(job.raw)}
    if job.status.terminal:
        document["terminal"] = True
    if deduplicated:
        document["deduplicated"] = True
    return document


def _wait_limit(seconds: float | None) -> dt.timedelta | None:
    return None if seconds is None else dt.timedelta(seconds=seconds)


def _outcome(job: Job, waited: float | None, io: Io) -> int:
    """0 when the job succeeded; otherwise say why on stderr and return 1."""
    status = output.job_status(job.status)
    if not job.status.terminal:
        limit = f" after {format_seconds(waited)}" if waited is not None else ""
        io.err.write(f"dispatchctl: job {job.job_id} is still {status}{limit}\n")
        return 1
    if job.status is JobStatus.SUCCEEDED:
        return 0
    reason = f": {job.error_message}" if job.error_message else ""
    io.err.write(f"dispatchctl: job {job.job_id} {status}{reason}\n")
    return 1


def submit(args: argparse.Namespace, client: Client, io: Io) -> int:
    if args.from_file is not None:
        return _submit_file(args, client, io)
    submission = client.submit(
        args.job_type,
        _read_payload(args),
        priority=args.priority,
        idempotency_key=args.idempotency_key,
        metadata=dict(args.meta or []),
        max_attempts=args.max_attempts,
        initial_backoff=args.initial_backoff,
        max_backoff=args.max_backoff,
        execution_timeout=args.execution_timeout,
        delay=args.delay,
        run_at=args.run_at,
    )
    extra = [("deduplicated", "yes")] if submission.deduplicated else []
    if not args.wait:
        if io.json:
            document = {"job": output.as_dict(submission.job.raw)}
            output.emit_json({**document, "deduplicated": True} if submission.deduplicated else document, io.out)
        else:
            output.job_block(submission.job.raw, io.out, extra)
        return 0
    job = client.wait(submission.job.job_id, _wait_limit(args.wait_timeout))
    if io.json:
        output.emit_json(_waited(job, submission.deduplicated), io.out)
    else:
        output.job_block(job.raw, io.out, extra)
    return _outcome(job, args.wait_timeout, io)


def _submit_file(args: argparse.Namespace, client: Client, io: Io) -> int:
    """Every job of the file, `--batch-size` per call; one line per job; 1 if any was refused."""
    numbered = jobfile.read(args.from_file)
    outcomes = list(
        zip(
            (n for n, _ in numbered),
            client.submit_many([s for _, s in numbered], chunk_size=args.batch_size),
            strict=True,
        )
    )
    if io.json:
        output.emit_json({"results": [_outcome_document(n, o) for n, o in outcomes]}, io.out)
    else:
        output.table(["LINE", "JOB ID", "OUTCOME"], [[str(n), o.job_id, _outcome_text(o)] for n, o in outcomes], io.out)
    refused = sum(1 for _, o in outcomes if o.error is not None)
    if refused:
        io.err.write(f"dispatchctl: {refused} of {len(outcomes)} job(s) refused\n")
    return 1 if refused else 0


def _outcome_document(line: int, outcome: BatchOutcome) -> dict[str, Any]:
    if outcome.error is not None:
        return {"line": line, "error": {"code": outcome.error.code, "message": outcome.error.details}}
    status = output.job_status(outcome.status)
    return {"line": line, "job_id": outcome.job_id, "status": status, "deduplicated": outcome.deduplicated}


def _outcome_text(outcome: BatchOutcome) -> str:
    if outcome.error is not None:
        return f"refused: {outcome.error.code}: {outcome.error.details}"
    return output.job_status(outcome.status) + (" (deduplicated)" if outcome.deduplicated else "")


def get(args: argparse.Namespace, client: Client, io: Io) -> int:
    _show_job(client.get(args.job_id), io)
    return 0


def list_jobs(args: argparse.Namespace, client: Client, io: Io) -> int:
    selection = {"status": args.status, "job_type": args.type, "page_size": args.limit}
    selection |= {"since": args.since, "until": args.until, "idempotency_key": args.idempotency_key}
    if args.all:
        jobs, next_token = list(client.iter_jobs(**selection)), ""
    else:
        page = client.list_jobs(**selection, page_token=args.page_token or "")
        jobs, next_token = list(page.items), page.next_page_token
    return _show_page("jobs", "list", [j.raw for j in jobs], next_token, output.JOB_COLUMNS, io)


def cancel(args: argparse.Namespace, client: Client, io: Io) -> int:
    _show_job(client.cancel(args.job_id, reason=args.reason or ""), io)
    return 0


def executions(args: argparse.Namespace, client: Client, io: Io) -> int:
    found = [e.raw for e in client.executions(args.job_id)]
    if io.json:
        output.emit_json({"executions": [output.as_dict(e) for e in found]}, io.out)
    else:
        output.table(output.EXECUTION_COLUMNS, output.execution_rows(found), io.out)
    return 0


def dead_letters(args: argparse.Namespace, client: Client, io: Io) -> int:
    selection = {"job_type": args.type, "since": args.since, "until": args.until, "page_size": args.limit}
    found: Iterable[DeadLetter]
    if args.all:
        found, next_token = client.iter_dead_letters(**selection), ""
    else:
        page: Page[DeadLetter] = client.dead_letters(**selection, page_token=args.page_token or "")
        found, next_token = page.items, page.next_page_token
    letters = [d.raw for d in found]
    return _show_page("dead_letters", "dead-letters", letters, next_token, output.DEAD_LETTER_COLUMNS, io)


def _show_page(field: str, command: str, items: Sequence[Any], next_token: str, columns: Any, io: Io) -> int:
    if io.json:
        output.emit_json({field: [output.as_dict(i) for i in items], "next_page_token": next_token}, io.out)
        return 0
    rows = output.job_rows(items) if field == "jobs" else output.dead_letter_rows(items)
    output.table(columns, rows, io.out)
    if next_token:
        what = field.replace("_", " ")
        io.err.write(f"more {what}: dispatchctl {command} --page-token {next_token} (or --all)\n")
    return 0


def redrive(args: argparse.Namespace, client: Client, io: Io) -> int:
    """Exit 0 when every named job (or every selected dead letter) was redriven, else 1."""
    filtered = bool(args.type or args.since is not None or args.until is not None)
    if args.job_ids and (filtered or args.all or args.limit):
        raise CliError("name job ids, or select dead letters with --type/--since/--until/--all; not both", 2)
    if not args.job_ids and not (filtered or args.all):
        raise CliError(
            "name the jobs to redrive, or select dead letters with --type/--since/--until (--all: every one)", 2
        )
    if args.job_ids:
        reply = client.redrive(args.job_ids, reason=args.reason or "")
    else:
        reply = client.redrive_matching(
            job_type=args.type, since=args.since, until=args.until, limit=args.limit, reason=args.reason or ""
        )
    if io.json:
        output.emit_json(output.as_dict(reply.raw), io.out)
    else:
        output.table(output.JOB_COLUMNS, output.job_rows([j.raw for j in reply.redriven]), io.out)
        for skipped in reply.skipped:
            io.err.write(f"dispatchctl: not redriven: {skipped.job_id}: {skipped.reason}\n")
        if reply.more:
            io.err.write("more dead letters match; run the same command again to redrive the next ones\n")
    return 1 if reply.skipped else 0


def wait(args: argparse.Namespace, client: Client, io: Io) -> int:
    job = client.wait(args.job_id, _wait_limit(args.wait_timeout))
    if io.json:
        output.emit_json(_waited(job), io.out)
    else:
        output.job_block(job.raw, io.out)
    return _outcome(job, args.wait_timeout, io)


def run(args: argparse.Namespace, client: Client, io: Io) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("run needs a command: dispatchctl run -- COMMAND [ARGS...]", exit_code=2)
    submitted = client.submit(
        shell.SHELL_JOB_TYPE, shell.payload(argv), priority=args.priority, max_attempts=args.max_attempts
    )
    job_id = submitted.job.job_id
    try:
        job = client.wait(job_id, _wait_limit(args.wait_timeout))
    except KeyboardInterrupt:
        # Like Ctrl-C on a local command: the remote one should stop too.
        try:
            client.cancel(job_id, reason="interrupted")
            io.err.write(f"dispatchctl: interrupted; cancelled job {job_id}\n")
        except DispatchdError as exc:
            io.err.write(f"dispatchctl: interrupted; could not cancel job {job_id}: {exc}\n")
        return 130
    if not job.status.terminal:
        return _outcome(job, args.wait_timeout, io)
    # Succeeded and dead-lettered jobs both carry their last attempt's output.
    result = shell.parse_result(job.result)
    if io.json:
        output.emit_json(output.as_dict(job.raw), io.out)
    elif result is not None:
        io.out.write(result.stdout)
        io.out.flush()
        io.err.write(result.stderr)
    if result is not None:
        return shell.exit_status(result.exit_code)
    return _outcome(job, args.wait_timeout, io)
