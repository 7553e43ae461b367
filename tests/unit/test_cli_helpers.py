"""dispatchctl's pure helpers: durations, `run` payloads and results, table layout."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest

from dispatchd.cli import durations, output, shell
from dispatchd.cli.main import build_parser


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", "0.5"), ("5s", "5"), ("1.5s", "1.5"), ("1m", "60"), ("2h", "7200"), ("3", "3"), (".25s", "0.25")],
)
def test_durations(text: str, seconds: str) -> None:
    assert durations.parse_seconds(text) == Decimal(seconds)


def test_duration_options_are_timedeltas() -> None:
    assert durations.duration_arg("1.5s") == dt.timedelta(seconds=1, milliseconds=500)
    assert durations.duration_arg("250ms") == dt.timedelta(milliseconds=250)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "5 days", "1.2.3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.parse_seconds(text)


def test_format_seconds() -> None:
    assert [durations.format_seconds(s) for s in (0.5, 5, 60, 90, 3600)] == ["500ms", "5s", "1m", "90s", "60m"]


def test_run_payload_keeps_one_argument_as_a_command_line() -> None:
    assert shell.command_line(["echo a | wc -c"]) == "echo a | wc -c"
    assert shell.command_line(["printf", "%s\n", "two words"]) == "printf '%s\n' 'two words'"
    assert shell.payload(["ls"]) == b'{"command": "ls"}'


def test_shell_results() -> None:
    parsed = shell.parse_result(b'{"exit_code": 2, "stdout": "o", "stderr": "e"}')
    assert parsed == shell.ShellResult(2, "o", "e")
    assert shell.parse_result(b'{"exit_code": 0}') == shell.ShellResult(0, "", "")
    for junk in (b"", b"not json", b"[1]", b'{"stdout": "x"}', b'{"exit_code": "1"}', b'{"exit_code": true}', b"\xff"):
        assert shell.parse_result(junk) is None
    assert [shell.exit_status(c) for c in (0, 3, 255, 256, -9)] == [0, 3, 255, 1, 137]


def test_table_aligns_columns() -> None:
    out = io.StringIO()
    output.table(("A", "LONG HEADER"), [("xxxx", "1"), ("y", "22")], out)
    assert out.getvalue().splitlines() == ["A     LONG HEADER", "xxxx  1", "y     22"]


def test_data_is_text_or_base64() -> None:
    assert output.data(b"hello") == "hello"
    assert output.data(b"\xff\x00") == "base64:/wA="
    assert output.data(b"") == ""


def test_common_options_work_after_the_command() -> None:
    args = build_parser().parse_args(["--target", "a:1", "list", "-o", "json", "--target", "b:2"])
    assert (args.target, args.output) == ("b:2", "json")
    args = build_parser().parse_args(["-o", "json", "get", "x"])
    assert (args.target, args.output, args.timeout) == ("127.0.0.1:50051", "json", 30.0)


def test_run_takes_everything_after_the_separator() -> None:
    args = build_parser().parse_args(["run", "--timeout", "5s", "--", "sh", "-c", "exit 1", "--timeout"])
    assert args.wait_timeout == 5.0
    assert [a for a in args.command if a != "--"] == ["sh", "-c", "exit 1", "--timeout"]
