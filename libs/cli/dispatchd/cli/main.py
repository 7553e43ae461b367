"""dispatchctl: submit, inspect, list, cancel and wait for dispatchd jobs; list and redrive dead letters;
workflows (`dispatchctl workflow ...`, in `workflows`), schedules (`schedules`); read logs, workers,
queues and cluster status, and watch job events (`observe`).

Exit status: 0 on success; 1 when a call fails or a waited-for job did not succeed (one
line on stderr says why); 2 for usage errors; `run` exits with the command's own status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dispatchd.cli import commands, observe, schedules, workflows
from dispatchd.cli.connection import CliError, describe, open_client, traced
from dispatchd.cli.durations import duration_arg, seconds_arg, time_arg, timestamp_arg
from dispatchd.client import BATCH_LIMIT, DEFAULT_TARGET, TARGET_ENV, DispatchdError
from dispatchd.common import names
from dispatchd.common import security as credentials
from dispatchd.common.arguments import key_value

STATUSES = ("pending", "dispatching", "running", "succeeded", "failed", "canceled", "waiting")
DEFAULT_RPC_TIMEOUT = 30.0


def _job_type(text: str) -> str:
    # The rule the control plane applies, checked here so a typo is a usage error (exit 2).
    try:
        return names.job_type(text, "JOB_TYPE")
    except names.InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status(text: str) -> str:
    value = text.lower()
    value = "canceled" if value == "cancelled" else value
    if value not in STATUSES:
        raise argparse.ArgumentTypeError(f"invalid status {text!r}: choose from {', '.join(STATUSES)}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    # Accepted before and after the command; after it they override what came before.
    default = argparse.SUPPRESS if suppress else None
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--target",
        default=default if suppress else os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"control plane address (env {TARGET_ENV}, default {DEFAULT_TARGET})",
    )
    parent.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default if suppress else "table",
        help="table for people (default), json for scripts",
    )
    credentials.add_arguments(parent, suppress)
    return parent


def _dead_letter_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", type=_job_type, metavar="JOB_TYPE", help="only jobs of exactly this type")
    parser.add_argument(
        "--since", type=time_arg, metavar="TIME", help="dead-lettered at or after TIME (ISO 8601, or e.g. 1h ago)"
    )
    parser.add_argument("--until", type=time_arg, metavar="TIME", help="dead-lettered before TIME")


def _pages(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--limit", type=_positive_int, metavar="N", help=f"{what} per page (server default 50)")
    parser.add_argument("--page-token", metavar="TOKEN", help="continue from a previous page")
    parser.add_argument("--all", action="store_true", help="follow every page")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatchctl",
        description="Submit, inspect, list, cancel and wait for dispatchd jobs.",
        parents=[_common_options(suppress=False)],
        epilog="Exit status: 0 ok; 1 error or job not succeeded; 2 usage; run: the command's status.",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=DEFAULT_RPC_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each call to the control plane (default {DEFAULT_RPC_TIMEOUT:g})",
    )
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    common = [_common_options(suppress=True)]

    def command(name: str, handler: Callable[..., int], summary: str, **more: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=summary, **more)
        p.set_defaults(handler=handler)
        return p

    p = command(
        "submit",
        commands.submit,
        "submit a job (or every job of a JSON Lines file)",
        description="Submit one job, or with --from-file every job of a JSON Lines file (one object per "
        "line with the fields of the flags below, e.g. job_type, payload, priority, idempotency_key, meta, "
        "delay), in batches; each job's outcome is printed and the exit status is 1 if any was refused.",
    )
    p.add_argument("job_type", nargs="?", type=_job_type, metavar="JOB_TYPE", help="dotted job type, e.g. email.send")
    p.add_argument("--from-file", metavar="PATH", help="submit the jobs of a JSON Lines file ('-' for stdin)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=BATCH_LIMIT,
        metavar="N",
        help=f"with --from-file: jobs per call, at most the server's limit (default {BATCH_LIMIT})",
    )
    payload = p.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="TEXT", help="payload as text (UTF-8)")
    payload.add_argument("--payload-file", metavar="PATH", help="payload from a file ('-' for stdin)")
    p.add_argument("--priority", type=int, default=0, help="0..1000, higher runs first (default 0)")
    p.add_argument("--idempotency-key", metavar="KEY", help="resubmitting with the same key returns the same job")
    p.add_argument(
        "--meta", type=key_value("metadata"), action="append", metavar="KEY=VALUE", help="metadata entry (repeatable)"
    )
    p.add_argument("--max-attempts", type=int, metavar="N", help="attempts before the job fails (default 3)")
    p.add_argument("--initial-backoff", type=duration_arg, metavar="DUR", help="first retry delay, e.g. 500ms, 5s")
    p.add_argument("--max-backoff", type=duration_arg, metavar="DUR", help="longest retry delay, e.g. 1m")
    p.add_argument(
        "--execution-timeout", type=duration_arg, metavar="DUR", help="stop and fail an attempt running this long"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration_arg, metavar="DUR", help="run no earlier than this long from now")
    when.add_argument(
        "--run-at", type=timestamp_arg, metavar="TIME", help="run no earlier than this time (ISO 8601, e.g. ...Z)"
    )
    p.add_argument("--wait", action="store_true", help="wait until the job has finished")
    p.add_argument("--wait-timeout", type=seconds_arg, metavar="SECONDS", help="with --wait: give up after this long")

    p = command(
        "run",
        commands.run,
        "run a shell command as a job and print its output",
        description="Run COMMAND on a worker as a `shell` job, print its output and exit with its status. "
        "A single argument is a shell command line as-is; several are quoted word by word.",
    )
    p.add_argument(
        "--timeout", dest="wait_timeout", type=seconds_arg, metavar="SECONDS", help="give up waiting after this long"
    )
    p.add_argument("--max-attempts", type=_positive_int, default=1, metavar="N", help="attempts (default 1)")
    p.add_argument("--priority", type=int, default=0, help="0..1000 (default 0)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")

    p = command("get", commands.get, "show a job")
    p.add_argument("job_id", metavar="JOB_ID")

    p = command("list", commands.list_jobs, "list jobs, newest first")
    p.add_argument("--status", type=_status, metavar="STATUS", help=f"only jobs in this status ({'|'.join(STATUSES)})")
    p.add_argument("--type", type=_job_type, metavar="JOB_TYPE", help="only jobs of exactly this type")
    p.add_argument("--since", type=time_arg, metavar="TIME", help="created at or after TIME (ISO 8601, or e.g. 1h ago)")
    p.add_argument("--until", type=time_arg, metavar="TIME", help="created before TIME")
    p.add_argument("--idempotency-key", metavar="KEY", help="only the job submitted with this idempotency key")
    _pages(p, "jobs")

    p = command("cancel", commands.cancel, "cancel a job")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--reason", metavar="TEXT", help="recorded on the job")

    p = command("executions", commands.executions, "list the attempts of a job")
    p.add_argument("job_id", metavar="JOB_ID")

    p = command("dead-letters", commands.dead_letters, "list dead-lettered jobs, newest first")
    _dead_letter_filter(p)
    _pages(p, "dead letters")

    p = command(
        "redrive",
        commands.redrive,
        "give dead-lettered jobs a new attempt with a fresh attempt budget",
        description="Redrive the named jobs, or the dead letters a filter selects (--all: every one). "
        "Only failed jobs whose last attempt was dead-lettered are redriven; history is kept.",
    )
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    _dead_letter_filter(p)
    p.add_argument("--all", action="store_true", help="without job ids or filters: every dead letter")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="with a filter: redrive at most N (oldest first)")
    p.add_argument("--reason", metavar="TEXT", help="logged by the control plane")

    p = command("wait", commands.wait, "wait until a job has finished")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "--timeout", dest="wait_timeout", type=seconds_arg, metavar="SECONDS", help="give up after this long"
    )
    workflows.add_parser(sub, common)
    schedules.register(sub, common)

    observe.register(command, _job_type, _status, _positive_int)
    return parser


# Flags that describe the one job of `submit`: with --from-file, the file describes the jobs.
_SINGLE_JOB_FLAGS = (
    *("job_type", "payload", "payload_file", "idempotency_key", "meta", "max_attempts", "initial_backoff"),
    *("max_backoff", "execution_timeout", "delay", "run_at", "wait_timeout"),
)


def _check_submit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.from_file is None:
        if args.job_type is None:
            parser.error("submit: JOB_TYPE is required (or --from-file)")
        return
    given = [name for name in _SINGLE_JOB_FLAGS if getattr(args, name) is not None]
    if given or args.wait or args.priority:
        parser.error("submit --from-file takes the jobs' fields from the file, not from JOB_TYPE or job flags")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command_name == "submit":
        _check_submit(parser, args)
    io = commands.Io(out=sys.stdout, err=sys.stderr, json=args.output == "json")
    try:
        security = credentials.ClientSecurity.from_args(args)
    except credentials.CredentialsError as exc:
        sys.stderr.write(f"dispatchctl: error: {exc}\n")
        return 2
    try:
        with open_client(args.target, args.timeout, security) as client, traced(args.command_name):
            code: int = args.handler(args, client, io)
    except DispatchdError as exc:
        sys.stderr.write(f"dispatchctl: error: {describe(exc, args.target, args.timeout)}\n")
        return 1
    except credentials.CredentialsError as exc:
        # A token file that cannot be read shows up at the first call.
        sys.stderr.write(f"dispatchctl: error: {exc}\n")
        return 2
    except CliError as exc:
        sys.stderr.write(f"dispatchctl: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("dispatchctl: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); say nothing more on a closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
