"""Finding 9: logging never blocks the event loop, loses nothing at stop, and cannot be flooded.

In-process: `configure_logging` as a service calls it, with stderr replaced by a stream whose
writes are slow, so a write done on the loop would show as a stalled loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pydantic
import pytest

from dispatchd.common import observability
from dispatchd.common.log_queue import LogQueue
from dispatchd.common.repeats import RepeatFilter
from dispatchd.platform.config import Settings
from dispatchd.platform.security import audit
from dispatchd.platform.security.settings import guardrail, load

SLOW_WRITE = 2.0


class SlowStream(io.StringIO):
    """stderr as a stalled pipe would make it: each write takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.writers: set[int] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.get_ident())
        time.sleep(self.delay)
        return super().write(text)

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


@pytest.fixture
def isolated_logging() -> Iterator[None]:
    """Whatever a test configures is stopped, and the loggers it changed restored, afterwards."""
    root, audit_log = logging.getLogger(), audit.log
    saved = (root.handlers[:], root.level, audit_log.handlers[:], audit_log.propagate, audit_log.level)
    try:
        yield
    finally:
        observability.stop_logging()
        root.handlers[:], root.level = saved[0], saved[1]
        audit_log.handlers[:], audit_log.propagate, audit_log.level = saved[2], saved[3], saved[4]


def _configure(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    observability.configure_logging("test", "INFO", as_json=True)


async def _longest_stall(action: Callable[[], None]) -> float:
    """The longest the loop went without running a 10 ms ticker while `action` ran on it."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        for _ in range(30):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.03)
    action()
    await task
    return max(gaps)


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _write_audit() -> None:
    record = audit.AuditRecord(method="/dispatchd.v1.JobService/GetJob", peer="ipv4:127.0.0.1:1", request_id="r-1")
    record.write("call", grpc.StatusCode.OK)


@pytest.mark.usefixtures("isolated_logging")
@pytest.mark.parametrize("kind", ["log line", "audit record"])
async def test_a_stalled_output_does_not_stall_the_event_loop(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowStream(SLOW_WRITE)
    _configure(monkeypatch, slow)
    if kind == "audit record":
        audit.configure(slow)
        action = _write_audit
    else:
        action = lambda: logging.getLogger("dispatchd.test").warning("written %s", "later")  # noqa: E731
    stall = await _longest_stall(action)
    assert stall < SLOW_WRITE / 2, f"the loop stalled {stall:.3f}s writing one {kind}"
    _wait_for(lambda: len(slow.lines()) == 1)
    assert threading.get_ident() not in slow.writers  # written by another thread than the loop's
    line = json.loads(slow.lines()[0])
    assert line["msg"] == ("written later" if kind == "log line" else "call /dispatchd.v1.JobService/GetJob OK")


@pytest.mark.usefixtures("isolated_logging")
def test_stop_writes_out_every_queued_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = SlowStream(0.001)
    _configure(monkeypatch, stream)
    log = logging.getLogger("dispatchd.test")
    for n in range(300):
        log.info("line %d", n)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    observability.stop_logging()
    lines = [json.loads(line) for line in stream.lines()]
    assert [line["msg"] for line in lines[:300]] == [f"line {n}" for n in range(300)]
    assert lines[300]["msg"] == "failed" and "ValueError: boom" in lines[300]["exc"]
    # After stop, lines are written at once rather than lost.
    log.info("after stop")
    assert json.loads(stream.lines()[-1])["msg"] == "after stop"


class _Gate(logging.Handler):
    """Holds the writer on its first record until opened; keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.open.wait(10)
        self.records.append(record)


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    gate = _Gate()
    pipeline = LogQueue(capacity=5)
    log = logging.getLogger("dispatchd.test.flood")
    pipeline.attach(log, [gate], "log lines")
    pipeline.start()
    try:
        started = time.monotonic()
        for n in range(50):
            log.warning("flood %d", n)
        assert time.monotonic() - started < 5.0  # never waited for the stuck writer (10 s per record)
    finally:
        gate.open.set()
        pipeline.stop()
        log.handlers.clear()
    written = [r for r in gate.records if r.name == log.name]
    notices = [r.getMessage() for r in gate.records if r.name == "dispatchd.logging"]
    assert written[0].getMessage() == "flood 0"
    assert len(notices) == 1 and notices[0].endswith("log lines dropped: the log queue was full")
    assert len(written) + int(notices[0].split()[0]) == 50


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, level: int = logging.ERROR, name: str = "dispatchd.x") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_pass_in_a_burst_then_once_per_interval_with_a_count() -> None:
    clock = _Clock()
    repeats = RepeatFilter(burst=3, interval=10.0, clock=clock)
    # A sustained flood, one line a second: the burst, then one line per interval carrying the count.
    passed = []
    for n in range(25):
        record = _record("job %s failed", n)
        if repeats.filter(record):
            passed.append(record.getMessage())
        clock.now += 1.0
    assert passed == [
        "job 0 failed",
        "job 1 failed",
        "job 2 failed",
        "job 12 failed (9 similar suppressed)",
        "job 22 failed (9 similar suppressed)",
    ]
    # Other templates, other loggers and info lines are not held back by this flood.
    assert repeats.filter(_record("another failure"))
    assert repeats.filter(_record("job %s failed", 1, name="dispatchd.y"))
    assert all(repeats.filter(_record("job %s failed", n, level=logging.INFO)) for n in range(20))
    # Quiet for an interval: the next one passes with what is still owed, and a new burst begins.
    clock.now += 10.0
    line = _record("job %s failed", 100)
    assert repeats.filter(line)
    assert line.getMessage() == "job 100 failed (2 similar suppressed)"
    assert [repeats.filter(_record("job %s failed", n)) for n in range(101, 106)] == [True, True, False, False, False]
    # The flood stops: the writer reports the count a whole interval after the last line passed.
    assert repeats.overdue() == []
    clock.now += 10.0
    (report,) = repeats.overdue()
    assert report.getMessage() == "job 105 failed (2 similar suppressed)"
    assert repeats.overdue(everything=True) == []


@pytest.mark.usefixtures("isolated_logging")
def test_a_flood_of_one_error_is_a_few_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    _configure(monkeypatch, stream)
    log = logging.getLogger("dispatchd.test")
    log.error("first of its kind")
    for n in range(1000):
        log.error("request %d failed", n)
    observability.stop_logging()
    messages = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert messages == [
        "first of its kind",
        *(f"request {n} failed" for n in range(5)),
        "request 999 failed (994 similar suppressed)",
    ]


AUDIT_CASES = [
    ("/dispatchd.v1.JobService/SubmitJob", grpc.StatusCode.OK),
    ("/dispatchd.v1.JobService/SubmitJob", grpc.StatusCode.INVALID_ARGUMENT),
    ("/dispatchd.v1.JobService/SubmitJob", grpc.StatusCode.PERMISSION_DENIED),
    ("/dispatchd.v1.JobService/GetJob", grpc.StatusCode.OK),
    ("/dispatchd.v1.JobService/GetJob", grpc.StatusCode.UNAUTHENTICATED),
    ("/dispatchd.v1.JobService/GetJob", grpc.StatusCode.NOT_FOUND),
    ("/dispatchd.v1.WorkerService/Connect", grpc.StatusCode.OK),
    ("/dispatchd.v1.WorkerService/Connect", grpc.StatusCode.RESOURCE_EXHAUSTED),
]


@pytest.mark.usefixtures("isolated_logging")
@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("all", [0, 1, 2, 3, 4, 5, 6, 7]),
        ("mutations", [0, 1, 2, 4, 6, 7]),
        ("denied", [2, 4, 7]),
        ("off", []),
    ],
)
def test_audit_level(level: str, expected: list[int]) -> None:
    stream = io.StringIO()
    audit.configure(stream)
    for n, (method, code) in enumerate(AUDIT_CASES):
        record = audit.AuditRecord(method=method, peer="ipv4:127.0.0.1:1", request_id=f"r-{n}", level=level)  # type: ignore[arg-type]
        record.write("call", code)
    written = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert written == [f"r-{n}" for n in expected]


def test_audit_level_setting() -> None:
    assert load(Settings()).audit_level == "all"  # on by default
    assert load(Settings(audit_level="denied")).audit_level == "denied"
    with pytest.raises(pydantic.ValidationError):
        Settings(audit_level="verbose")  # type: ignore[arg-type]
    assert "the audit log is off (set DISPATCHD_AUDIT_LEVEL to all, mutations or denied)" in guardrail(
        Settings(app_env="production", audit_level="off")
    )
    assert not [p for p in guardrail(Settings(app_env="production", audit_level="denied")) if "audit" in p]
