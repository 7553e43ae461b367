"""`dispatchd-worker`: run a worker process with built-in and/or your own handlers.

    dispatchd-worker --target gateway:50052 --builtins
    dispatchd-worker --enable-shell --concurrency 2
    dispatchd-worker --handlers myapp.jobs:register      # register(worker) adds handlers
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dispatchd.common import loops
from dispatchd.common import security as credentials
from dispatchd.common.arguments import key_value

# Only gRPC-free modules at import time: main() configures gRPC before it is loaded.
from dispatchd.common.metrics import MetricsListenError, parse_listen, serve_metrics
from dispatchd.common.observability import configure_logging
from dispatchd.common.tracing import configure_tracing, stop_tracing
from dispatchd.sdk.defaults import DEFAULT_TARGET

if TYPE_CHECKING:
    from dispatchd.sdk.worker import Worker

log = logging.getLogger("dispatchd.sdk.cli")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatchd-worker", description="Run a dispatchd worker.")
    parser.add_argument(
        "--target",
        default=os.environ.get("DISPATCHD_GATEWAY_TARGET", DEFAULT_TARGET),
        help="worker gateway address, or several comma-separated to fail over between "
        "(env DISPATCHD_GATEWAY_TARGET; default %(default)s)",
    )
    parser.add_argument("--worker-id", default=None, help="stable worker identity (default: hostname-pid)")
    parser.add_argument("--concurrency", type=int, default=4, help="executions run at once (default %(default)s)")
    parser.add_argument(
        "--label",
        type=key_value("label"),
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="worker label (repeatable)",
    )
    parser.add_argument(
        "--enable-shell", action="store_true", help="offer the 'shell' job type (runs arbitrary commands!)"
    )
    parser.add_argument("--builtins", action="store_true", help="offer builtin.echo/sleep/fail/flaky")
    parser.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE:CALLABLE",
        help="call CALLABLE(worker) to register handlers (repeatable)",
    )
    parser.add_argument(
        "--batches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask the gateway for batched stream messages (default: on; --no-batches: one message per item)",
    )
    parser.add_argument("--heartbeat-seconds", type=_positive, default=5.0, help="default %(default)s")
    parser.add_argument(
        "--grace-seconds", type=float, default=30.0, help="time running work gets on SIGTERM (default %(default)s)"
    )
    parser.add_argument("--log-level", default=os.environ.get("DISPATCHD_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json" if os.environ.get("DISPATCHD_LOG_JSON", "true").lower() in ("1", "true", "yes") else "text",
    )
    parser.add_argument(
        "--metrics-listen",
        default=os.environ.get("DISPATCHD_METRICS_LISTEN", ""),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env DISPATCHD_METRICS_LISTEN; default: off)",
    )
    credentials.add_arguments(parser)
    return parser


def _load_registrar(spec: str) -> Callable[[Worker], Any]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--handlers takes module:callable, not {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def build_worker(args: argparse.Namespace) -> Worker:
    from dispatchd.sdk import handlers
    from dispatchd.sdk.worker import Worker

    worker = Worker(
        args.target,
        worker_id=args.worker_id,
        max_concurrency=args.concurrency,
        labels=dict(args.label),
        heartbeat_seconds=args.heartbeat_seconds,
        security=credentials.ClientSecurity.from_args(args),
        batches=args.batches,
    )
    if args.builtins:
        handlers.register_builtins(worker)
    if args.enable_shell:
        handlers.register_shell(worker)
    for spec in args.handlers:
        _load_registrar(spec)(worker)
    return worker


async def serve(worker: Worker, grace: float) -> int:
    from dispatchd.sdk.registration import RegistrationRejected

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop, grace)
    log.info(
        "worker starting",
        extra={
            "fields": {
                "worker_id": worker.worker_id,
                "target": worker.target,
                "capabilities": worker.capabilities,
                "max_concurrency": worker.max_concurrency,
            }
            | loops.runtime()
        },
    )
    try:
        await worker.run()
    except RegistrationRejected as exc:
        log.error("registration rejected: %s", exc)
        return 1
    log.info("worker stopped")
    return 0




def main(argv: Sequence[str] | None = None) -> None:
    # The shell handler forks (uvloop spawns with fork()) and the children exec at once:
    # gRPC's fork handlers have nothing to do there and would only log that they skip.
    # gRPC reads this when it is first imported, which happens below, not before.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be between 1 and 1000")
    try:
        parse_listen(args.metrics_listen)
    except MetricsListenError as exc:
        parser.error(str(exc))
    try:
        worker = build_worker(args)
    except credentials.CredentialsError as exc:
        parser.error(str(exc))
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        parser.error(f"cannot register handlers: {exc}")
    if not worker.capabilities:
        parser.error("no handlers: pass --builtins, --enable-shell or --handlers MODULE:CALLABLE")
    configure_logging("worker", args.log_level, args.log_format == "json")
    try:
        serve_metrics(args.metrics_listen, "worker")
    except OSError as exc:
        parser.error(f"cannot serve metrics on {args.metrics_listen}: {exc}")
    configure_tracing("worker")  # a handler span per attempt when an OTLP endpoint is configured
    code = loops.run(serve(worker, args.grace_seconds))
    stop_tracing()
    sys.exit(code)


if __name__ == "__main__":
    main()
