"""dispatchctl's options for timeouts, delayed jobs and dead letters (parsing only)."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatchd.cli import durations
from dispatchd.cli.main import build_parser

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_points_in_time_are_timestamps_or_durations_ago() -> None:
    assert durations.parse_time("1h", NOW) == NOW - dt.timedelta(hours=1)
    assert durations.parse_time("90s", NOW) == NOW - dt.timedelta(seconds=90)
    assert durations.parse_time("2025-02-01T00:00:00Z") == dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    assert durations.parse_time("2025-02-01T01:00:00+01:00") == dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    assert durations.parse_time("2025-02-01 00:00") == dt.datetime(2025, 2, 1, tzinfo=dt.UTC)  # no zone: UTC
    with pytest.raises(ValueError, match="invalid time"):
        durations.parse_time("yesterday")
    with pytest.raises(ValueError, match="invalid time"):
        durations.parse_timestamp("5m")  # --run-at wants a time, not a duration


def test_submit_takes_an_execution_timeout_and_one_schedule() -> None:
    args = build_parser().parse_args(["submit", "t", "--execution-timeout", "1.5s", "--delay", "500ms"])
    assert args.execution_timeout == dt.timedelta(seconds=1.5) and args.delay == dt.timedelta(milliseconds=500)
    args = build_parser().parse_args(["submit", "t", "--run-at", "2030-01-01T00:00:00Z"])
    assert args.run_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "t", "--delay", "1s", "--run-at", "2030-01-01T00:00:00Z"])


def test_dead_letter_commands_parse_filters() -> None:
    args = build_parser().parse_args(["dead-letters", "--type", "mail", "--since", "1h", "--limit", "5", "--all"])
    assert (args.type, args.limit, args.all, args.until) == ("mail", 5, True, None)
    assert args.since < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=59)
    args = build_parser().parse_args(["redrive", "a", "b", "--reason", "fixed"])
    assert (args.job_ids, args.reason, args.type) == (["a", "b"], "fixed", None)
    args = build_parser().parse_args(["redrive", "--type", "mail", "--limit", "10"])
    assert (args.job_ids, args.type, args.limit) == ([], "mail", 10)
