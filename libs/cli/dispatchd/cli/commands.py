"""The dispatchctl commands. Each returns the process exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from dispatchd.cli import output, shell
from dispatchd.cli.connection import Client, CliError
from dispatchd.cli.durations import format_seconds
from dispatchd.v1 import common_pb2, job_service_pb2


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


def _show_job(job: common_pb2.Job, io: Io, extra: list[tuple[str, str]] | None = None) -> None:
    if io.json:
        output.emit_json(output.as_dict(job), io.out)
    else:
        output.job_block(job, io.out, extra or [])


def _outcome(reply: job_service_pb2.WaitJobResponse, waited: float | None, io: Io) -> int:
    """0 when the job succeeded; otherwise say why on stderr and return 1."""
    job = reply.job
    if not reply.terminal:
        limit = f" after {format_seconds(waited)}" if waited is not None else ""
        io.err.write(f"dispatchctl: job {job.job_id} is still {output.job_status(job.status)}{limit}\n")
        return 1
    if job.status == common_pb2.JOB_STATUS_SUCCEEDED:
        return 0
    reason = f": {job.error_message}" if job.error_message else ""
    io.err.write(f"dispatchctl: job {job.job_id} {output.job_status(job.status)}{reason}\n")
    return 1


def submit(args: argparse.Namespace, client: Client, io: Io) -> int:
    request = job_service_pb2.SubmitJobRequest(
        job_type=args.job_type,
        payload=_read_payload(args),
        priority=args.priority,
        idempotency_key=args.idempotency_key or "",
        metadata=dict(args.meta or []),
    )
    if args.max_attempts is not None:
        request.retry_policy.max_attempts = args.max_attempts
    if args.initial_backoff is not None:
        request.retry_policy.initial_backoff.CopyFrom(args.initial_backoff)
    if args.max_backoff is not None:
        request.retry_policy.max_backoff.CopyFrom(args.max_backoff)
    if args.execution_timeout is not None:
        request.execution_timeout.CopyFrom(args.execution_timeout)
    if args.delay is not None:
        request.delay.CopyFrom(args.delay)
    if args.run_at is not None:
        request.run_at.CopyFrom(args.run_at)
    reply = client.call(client.stub.SubmitJob, request)
    if not args.wait:
        if io.json:
            output.emit_json(output.as_dict(reply), io.out)
        else:
            output.job_block(reply.job, io.out, [("deduplicated", "yes")] if reply.deduplicated else [])
        return 0
    waited = client.wait(reply.job.job_id, args.wait_timeout)
    if io.json:
        document = output.as_dict(waited)
        if reply.deduplicated:
            document["deduplicated"] = True
        output.emit_json(document, io.out)
    else:
        output.job_block(waited.job, io.out, [("deduplicated", "yes")] if reply.deduplicated else [])
    return _outcome(waited, args.wait_timeout, io)


def get(args: argparse.Namespace, client: Client, io: Io) -> int:
    reply = client.call(client.stub.GetJob, job_service_pb2.GetJobRequest(job_id=args.job_id))
    _show_job(reply.job, io)
    return 0


def list_jobs(args: argparse.Namespace, client: Client, io: Io) -> int:
    request = job_service_pb2.ListJobsRequest(
        status=common_pb2.JobStatus.Value("JOB_STATUS_" + args.status.upper())
        if args.status
        else common_pb2.JOB_STATUS_UNSPECIFIED,
        job_type=args.type or "",
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    jobs, next_token = _pages(lambda: client.call(client.stub.ListJobs, request), request, "jobs", args.all)
    return _show_page("jobs", "list", jobs, next_token, output.JOB_COLUMNS, output.job_rows(jobs), io)


def cancel(args: argparse.Namespace, client: Client, io: Io) -> int:
    request = job_service_pb2.CancelJobRequest(job_id=args.job_id, reason=args.reason or "")
    reply = client.call(client.stub.CancelJob, request)
    _show_job(reply.job, io)
    return 0


def _all_executions(client: Client, job_id: str) -> list[common_pb2.Execution]:
    request = job_service_pb2.ListExecutionsRequest(job_id=job_id)
    executions: list[common_pb2.Execution] = []
    while True:
        reply = client.call(client.stub.ListExecutions, request)
        executions.extend(reply.executions)
        if not reply.next_page_token:
            return executions
        request.page_token = reply.next_page_token


def executions(args: argparse.Namespace, client: Client, io: Io) -> int:
    found = _all_executions(client, args.job_id)
    if io.json:
        output.emit_json({"executions": [output.as_dict(e) for e in found]}, io.out)
    else:
        output.table(output.EXECUTION_COLUMNS, output.execution_rows(found), io.out)
    return 0


def _filter(args: argparse.Namespace) -> job_service_pb2.DeadLetterFilter:
    flt = job_service_pb2.DeadLetterFilter(job_type=args.type or "")
    if args.since is not None:
        flt.since.CopyFrom(args.since)
    if args.until is not None:
        flt.until.CopyFrom(args.until)
    return flt


def dead_letters(args: argparse.Namespace, client: Client, io: Io) -> int:
    request = job_service_pb2.ListDeadLettersRequest(
        filter=_filter(args), page_size=args.limit or 0, page_token=args.page_token or ""
    )
    found, next_token = _pages(
        lambda: client.call(client.stub.ListDeadLetters, request), request, "dead_letters", args.all
    )
    rows = output.dead_letter_rows(found)
    return _show_page("dead_letters", "dead-letters", found, next_token, output.DEAD_LETTER_COLUMNS, rows, io)


def _pages(fetch: Callable[[], Any], request: Any, field: str, everything: bool) -> tuple[list[Any], str]:
    """One page, or with --all every page; returns the items and the token of the next page."""
    items: list[Any] = []
    while True:
        reply = fetch()
        items.extend(getattr(reply, field))
        if not (everything and reply.next_page_token):
            return items, str(reply.next_page_token)
        request.page_token = reply.next_page_token


def _show_page(
    field: str, command: str, items: list[Any], next_token: str, columns: Any, rows: Any, io: Io
) -> int:
    if io.json:
        output.emit_json({field: [output.as_dict(i) for i in items], "next_page_token": next_token}, io.out)
        return 0
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
    request = job_service_pb2.RedriveJobsRequest(job_ids=args.job_ids, reason=args.reason or "")
    if not args.job_ids:
        request.filter.CopyFrom(_filter(args))
        request.limit = args.limit or 0
    reply = client.call(client.stub.RedriveJobs, request)
    if io.json:
        output.emit_json(output.as_dict(reply), io.out)
    else:
        output.table(output.JOB_COLUMNS, output.job_rows(reply.redriven), io.out)
        for skipped in reply.skipped:
            io.err.write(f"dispatchctl: not redriven: {skipped.job_id}: {skipped.reason}\n")
        if reply.more:
            io.err.write("more dead letters match; run the same command again to redrive the next ones\n")
    return 1 if reply.skipped else 0


def wait(args: argparse.Namespace, client: Client, io: Io) -> int:
    reply = client.wait(args.job_id, args.wait_timeout)
    if io.json:
        output.emit_json(output.as_dict(reply), io.out)
    else:
        output.job_block(reply.job, io.out)
    return _outcome(reply, args.wait_timeout, io)


def _shell_result(job: common_pb2.Job) -> shell.ShellResult | None:
    # Succeeded and dead-lettered jobs both carry their last attempt's output.
    return shell.parse_result(job.result)


def run(args: argparse.Namespace, client: Client, io: Io) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("run needs a command: dispatchctl run -- COMMAND [ARGS...]", exit_code=2)
    request = job_service_pb2.SubmitJobRequest(
        job_type=shell.SHELL_JOB_TYPE,
        payload=shell.payload(argv),
        priority=args.priority,
        retry_policy=common_pb2.RetryPolicy(max_attempts=args.max_attempts),
    )
    job_id = client.call(client.stub.SubmitJob, request).job.job_id
    try:
        reply = client.wait(job_id, args.wait_timeout)
    except KeyboardInterrupt:
        # Like Ctrl-C on a local command: the remote one should stop too.
        try:
            client.call(client.stub.CancelJob, job_service_pb2.CancelJobRequest(job_id=job_id, reason="interrupted"))
            io.err.write(f"dispatchctl: interrupted; cancelled job {job_id}\n")
        except CliError as exc:
            io.err.write(f"dispatchctl: interrupted; could not cancel job {job_id}: {exc}\n")
        return 130
    job = reply.job
    if not reply.terminal:
        return _outcome(reply, args.wait_timeout, io)
    result = _shell_result(job)
    if io.json:
        output.emit_json(output.as_dict(job), io.out)
    elif result is not None:
        io.out.write(result.stdout)
        io.out.flush()
        io.err.write(result.stderr)
    if result is not None:
        return shell.exit_status(result.exit_code)
    return _outcome(reply, args.wait_timeout, io)
