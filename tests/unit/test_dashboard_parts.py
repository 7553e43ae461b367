"""The dashboard's pure parts: CSRF tokens, the caller's roles and buttons, chart buckets, previews."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest

from dispatchd.client import Job, JobStatus
from dispatchd.dashboard import callers, overview, rendering
from dispatchd.dashboard.csrf import CsrfGuard
from dispatchd.v1 import common_pb2


def unsigned_jwt(claims: dict[str, object]) -> str:
    """A token with these claims; the dashboard reads claims without checking signatures."""
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NiJ9.{part}.c2ln"


def test_a_csrf_token_is_good_for_its_own_session_only() -> None:
    guard = CsrfGuard(b"k" * 32)
    token = guard.token_for("session-a")
    assert guard.valid("session-a", token)
    assert not guard.valid("session-b", token)
    assert not guard.valid("session-a", token[:-1] + "0")
    assert not guard.valid("session-a", None) and not guard.valid(None, token)
    assert not CsrfGuard(b"x" * 32).valid("session-a", token)  # another key (another deployment)


@pytest.mark.parametrize(
    ("claims", "redrive", "cancel"),
    [
        ({"sub": "vera", "roles": ["viewer"]}, False, False),
        ({"sub": "olga", "roles": "operator"}, True, True),
        ({"sub": "ada", "scope": "dispatchd:admin"}, True, True),
        ({"sub": "sam", "roles": ["submitter"]}, False, False),
        ({"sub": "eve", "roles": ["root"]}, False, False),  # unknown roles grant nothing
    ],
)
def test_buttons_follow_the_role_table(claims: dict[str, object], redrive: bool, cancel: bool) -> None:
    caller = callers.from_token(unsigned_jwt(claims))
    assert caller.subject == claims["sub"]
    assert (caller.may("RedriveJobs"), caller.may("CancelJob")) == (redrive, cancel)


def test_without_a_token_the_control_plane_alone_decides() -> None:
    assert callers.from_token(None).may("RedriveJobs")  # security off: everyone may; on: the call is refused
    garbage = callers.from_token("not-a-jwt")
    assert garbage.roles == frozenset() and not garbage.may("ListDeadLetters")


def job(created: dt.datetime, status: JobStatus, finished: dt.datetime | None) -> Job:
    base = Job.from_proto(common_pb2.Job(job_id="j"))
    return replace(base, created_at=created, status=status, finished_at=finished)


def test_throughput_counts_submissions_and_outcomes_per_minute() -> None:
    now = dt.datetime(2026, 1, 1, 12, 30, 30, tzinfo=dt.UTC)
    minute = dt.timedelta(minutes=1)
    found = [
        job(now - 2 * minute, JobStatus.SUCCEEDED, now - minute),
        job(now - 2 * minute, JobStatus.FAILED, now),
        job(now, JobStatus.RUNNING, None),
        job(now - dt.timedelta(hours=2), JobStatus.CANCELED, now - dt.timedelta(hours=2)),  # outside the window
    ]
    series = overview.throughput(found, now)
    assert len(series["minutes"]) == 31 and series["minutes"][-1] == overview.minute(now)
    assert sum(series["submitted"]) == 3 and series["submitted"][-3] == 2 and series["submitted"][-1] == 1
    assert (series["succeeded"][-2], series["failed"][-1], sum(series["canceled"])) == (1, 1, 0)


def test_previews_show_json_indented_text_as_is_and_binary_by_size() -> None:
    assert rendering.preview(b'{"a":1}') == '{\n  "a": 1\n}'
    assert rendering.preview("héllo".encode()) == "héllo"
    assert rendering.preview(b"\xff\xfe") == "<2 bytes of binary data>"
    assert rendering.preview(b"x" * 5000).endswith("(5000 characters)")
    assert rendering.took(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, 0, 2, 5, tzinfo=dt.UTC)) == (
        "2 min 05 s"
    )


def test_help_lists_the_settings_without_reading_them(capsys: pytest.CaptureFixture[str]) -> None:
    from dispatchd.dashboard.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dispatchd-dashboard")
    for variable in ("DISPATCHD_DASHBOARD_LISTEN", "DISPATCHD_CONTROL_PLANE_TARGET", "DISPATCHD_HEALTH_LISTEN"):
        assert variable in out


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("DISPATCHD_DASHBOARD_LISTEN", "garbage", "DISPATCHD_DASHBOARD_LISTEN='garbage' is not host:port"),
        ("DISPATCHD_DASHBOARD_LISTEN", "127.0.0.1:99999", "is not host:port"),
        ("DISPATCHD_DASHBOARD_COOKIE_SECURE", "maybe", "bad configuration: cookie_secure"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    from dispatchd.dashboard.settings import load

    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        load()
    assert said in str(exit_info.value.code) and "\n" not in str(exit_info.value.code)


def test_the_csrf_key_file_must_be_readable_and_long_enough(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short")
    with pytest.raises(ValueError, match="holds 9 bytes; at least 32"):
        CsrfGuard.from_file(short)
    with pytest.raises(ValueError, match="cannot read"):
        CsrfGuard.from_file(tmp_path / "missing")


def test_a_submitter_is_shown_only_the_pages_its_role_can_read() -> None:
    submitter = callers.from_token(unsigned_jwt({"sub": "sam", "roles": ["submitter"]}))
    shown = [title for _, title, method in rendering.NAVIGATION if submitter.may(method)]
    assert shown == ["Overview", "Jobs", "Workflows"]  # its own runs; schedules are not its to read
