"""Worker SDK pieces that need no gateway: routing, results, the outbox, the CLI."""

from __future__ import annotations

import asyncio
import json

import pytest

from dispatchd.sdk import HandlerFailed, Task, TaskCancelled, Worker, cli, encode_result, handlers
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.registry import Registry
from dispatchd.sdk.task import describe_error
from dispatchd.v1 import worker_service_pb2 as pb


async def _noop(task: Task) -> None:
    return None


async def _other(task: Task) -> None:
    return None


def _task(payload: bytes = b"", attempt: int = 1) -> Task:
    return Task(execution_id="e", job_id="j", job_type="t", payload=payload, attempt=attempt)


def test_routing_prefers_the_longest_matching_namespace() -> None:
    registry = Registry()
    registry.register("email", _noop)
    registry.register("email.digest", _other)
    assert registry.resolve("email") is _noop
    assert registry.resolve("email.send") is _noop
    assert registry.resolve("email.digest") is _other
    assert registry.resolve("email.digest.weekly") is _other
    assert registry.resolve("emails") is None
    assert registry.resolve("sms.send") is None
    assert registry.capabilities == ["email", "email.digest"]


@pytest.mark.parametrize("job_type", ["", "Email", "email..send", "email send", "x" * 129])
def test_invalid_job_types_are_refused(job_type: str) -> None:
    with pytest.raises(ValueError, match="not a valid job type"):
        Registry().register(job_type, _noop)


def test_duplicate_registration_is_refused() -> None:
    worker = Worker()
    worker.register("email", _noop)
    with pytest.raises(ValueError, match="already registered"):
        worker.register("email", _other)


def test_decorator_registers_and_returns_the_function() -> None:
    worker = Worker(worker_id="w")

    @worker.handler("reports.daily")
    async def daily(task: Task) -> str:
        return "ok"

    assert worker.capabilities == ["reports.daily"]
    assert worker.registry.resolve("reports.daily") is daily
    assert worker.worker_id == "w"


def test_default_worker_id_is_host_and_pid() -> None:
    import os
    import socket

    assert Worker().worker_id == f"{socket.gethostname()}-{os.getpid()}"


@pytest.mark.parametrize("bad", [{"max_concurrency": 0}, {"max_concurrency": 1001}, {"heartbeat_seconds": 0}])
def test_worker_validates_its_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Worker(**bad)  # type: ignore[arg-type]


async def test_worker_without_handlers_does_not_run() -> None:
    with pytest.raises(ValueError, match="no handlers"):
        await Worker().run()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b""),
        (b"\x00raw", b"\x00raw"),
        (bytearray(b"ba"), b"ba"),
        ("héllo", "héllo".encode()),
        ({"a": 1}, b'{"a":1}'),
        ([1, "x"], b'[1,"x"]'),
    ],
)
def test_return_values_become_result_bytes(value: object, expected: bytes) -> None:
    assert encode_result(value) == expected


def test_unsupported_return_values_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="handler returned int"):
        encode_result(42)


def test_task_helpers() -> None:
    task = _task(b'{"x": [1]}')
    assert task.json() == {"x": [1]}
    assert _task().json() is None
    assert task.text() == '{"x": [1]}'
    task.raise_if_cancelled()
    task.cancelled.set()
    with pytest.raises(TaskCancelled):
        task.raise_if_cancelled()


def test_errors_are_described_with_their_type() -> None:
    assert describe_error(ValueError("bad input")) == "ValueError: bad input"
    assert describe_error(KeyError()) == "KeyError"
    failed = HandlerFailed("exit code 3", result={"exit_code": 3})
    assert str(failed) == "exit code 3" and failed.result == {"exit_code": 3}


async def test_outbox_keeps_order_and_throttles_logs() -> None:
    outbox = Outbox(limit=2)
    first = pb.ConnectRequest(started=pb.TaskStarted(execution_id="1"))
    outbox.put(first)
    outbox.put(first)
    waiting = asyncio.create_task(outbox.put_throttled(pb.ConnectRequest(started=pb.TaskStarted(execution_id="3"))))
    await asyncio.sleep(0.01)
    assert not waiting.done() and len(outbox) == 2
    assert await outbox.get() == first
    await asyncio.wait_for(waiting, 1)
    outbox.close()
    outbox.put(first)  # after close: dropped
    assert [await outbox.get() for _ in range(3)][1:] == [
        pb.ConnectRequest(started=pb.TaskStarted(execution_id="3")),
        None,
    ]


async def test_builtin_handlers() -> None:
    assert await handlers.echo(_task(b"hi")) == b"hi"
    assert await handlers.sleep(_task(b'{"seconds": 0.01}')) == {"slept": 0.01}
    with pytest.raises(RuntimeError, match="always fails"):
        await handlers.fail(_task())
    flaky = b'{"fail_attempts": 2}'
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match="flaky"):
            await handlers.flaky(_task(flaky, attempt))
    assert await handlers.flaky(_task(flaky, 3)) == {"attempt": 3}


def _args(*argv: str) -> Worker:
    return cli.build_worker(cli.build_parser().parse_args(list(argv)))


def test_cli_asks_for_batches_unless_told_not_to() -> None:
    assert _args("--builtins").batches
    assert not _args("--builtins", "--no-batches").batches


def test_cli_registers_shell_only_when_enabled() -> None:
    assert "shell" not in _args("--builtins").capabilities
    assert _args("--builtins").capabilities == ["builtin.echo", "builtin.fail", "builtin.flaky", "builtin.sleep"]
    assert _args("--enable-shell").capabilities == ["shell"]


def test_cli_loads_handler_modules() -> None:
    worker = _args("--handlers", "dispatchd.sdk.handlers:register_shell", "--label", "zone=a", "--concurrency", "9")
    assert worker.capabilities == ["shell"]
    assert worker.labels == {"zone": "a"} and worker.max_concurrency == 9


def test_cli_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHD_GATEWAY_TARGET", "gw:1234")
    assert _args("--builtins").target == "gw:1234"
    assert _args("--builtins", "--target", "x:1").target == "x:1"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "no handlers"),
        (["--handlers", "nope"], "module:callable"),
        (["--handlers", "dispatchd.sdk.missing:x"], "cannot register handlers"),
        (["--builtins", "--label", "novalue"], "key=value"),
        (["--builtins", "--concurrency", "0"], "between 1 and 1000"),
    ],
)
def test_cli_refuses_bad_invocations(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "true")  # main() would set it for this whole process
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_shell_payloads() -> None:
    spec = handlers.ShellCommand.from_payload(b"echo hi")
    assert spec.command == "echo hi" and spec.timeout_seconds is None
    body = {"command": "ls", "timeout_seconds": 2, "env": {"A": "b"}, "cwd": "/tmp"}
    spec = handlers.ShellCommand.from_payload(json.dumps(body).encode())
    assert (spec.command, spec.timeout_seconds, spec.env, spec.cwd) == ("ls", 2, {"A": "b"}, "/tmp")
    for bad in (b"", b'{"command": ""}', b'{"command": "x", "timeout_seconds": -1}', b'{"command": "x", "env": [1]}'):
        with pytest.raises(ValueError):
            handlers.ShellCommand.from_payload(bad)
