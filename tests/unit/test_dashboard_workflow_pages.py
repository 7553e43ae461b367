"""The dashboard's workflow and schedule pages, their pure parts: the run drawing's layout, how a
schedule's timing and fires read, the status lists the filters offer, and where actions return."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatchd.client import ScheduleFire
from dispatchd.dashboard import calls, dag, jobs, schedules, workflows
from dispatchd.dashboard.callers import from_token
from dispatchd.dashboard.rendering import NAVIGATION
from tests.support.security import forge

DIAMOND = [("a", (), "succeeded", "ja"), ("b", ("a",), "running", "jb"), ("c", ("a",), "pending", "jc"),
           ("d", ("b", "c"), "waiting", "jd")]


def test_a_step_sits_one_column_right_of_its_furthest_parent() -> None:
    assert dag.columns({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}) == {"a": 0, "b": 1, "c": 1, "d": 2}
    # d depends on a directly and through b: the longer path decides, so the edge a->d still points right.
    assert dag.columns({"a": (), "b": ("a",), "d": ("a", "b")})["d"] == 2


def test_the_diamond_is_drawn_left_to_right_with_one_edge_per_dependency() -> None:
    drawing = dag.layout(DIAMOND)
    assert drawing is not None
    at = {n.step_id: n for n in drawing.nodes}
    assert at["a"].x < at["b"].x == at["c"].x < at["d"].x
    assert at["b"].y < at["c"].y  # definition order within a column
    assert (at["d"].status, at["d"].job_id) == ("waiting", "jd")
    assert len(drawing.edges) == 4
    for path in drawing.edges:
        start, end = path.split(" ")[0], path.split(" ")[-1]
        assert int(start[1:].split(",")[0]) < int(end.split(",")[0])  # every edge points right
    assert drawing.width == 2 * dag.MARGIN + 3 * dag.NODE_WIDTH + 2 * dag.COLUMN_GAP
    assert drawing.height == 2 * dag.MARGIN + 2 * dag.NODE_HEIGHT + dag.ROW_GAP
    assert all(n.x + dag.NODE_WIDTH <= drawing.width and n.y + dag.NODE_HEIGHT <= drawing.height for n in drawing.nodes)


def test_no_drawing_for_nothing_or_too_much() -> None:
    assert dag.layout([]) is None
    chain = [(f"s{i}", (f"s{i - 1}",) if i else (), "waiting", "") for i in range(dag.MAX_STEPS + 1)]
    assert dag.layout(chain) is None
    assert dag.layout(chain[: dag.MAX_STEPS]) is not None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "every 0.5 s"), (90, "every 90 s"), (300, "every 5 min"), (7200, "every 2 h"), (86_400, "every 1 d")],
)
def test_an_interval_reads_in_its_largest_whole_unit(seconds: float, text: str) -> None:
    assert schedules.every(dt.timedelta(seconds=seconds)) == text


def test_what_a_fire_started_links_to_it_or_says_why_nothing() -> None:
    at = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)
    assert schedules.outcome(ScheduleFire(at, at, "j1", "", "")) == ("/jobs/j1", "j1")
    assert schedules.outcome(ScheduleFire(at, at, "", "r1", "")) == ("/workflows/runs/r1", "r1")
    assert schedules.outcome(ScheduleFire(at, at, "", "", "version 3 is gone")) == ("", "version 3 is gone")
    assert "overlap" in schedules.outcome(ScheduleFire(at, at, "", "", ""))[1]


def test_the_filters_know_every_status() -> None:
    assert "waiting" in jobs.STATUSES  # JOB_STATUS_WAITING (7): a workflow step not released yet
    assert workflows.RUN_STATUSES == ["running", "succeeded", "failed", "canceled"]


@pytest.mark.parametrize(
    ("value", "page"),
    [("/schedules/a.b", "/schedules/a.b"), ("//evil.example/x", "/d"), ("https://evil.example/", "/d"), (None, "/d")],
)
def test_an_action_returns_only_to_a_page_of_this_site(value: object, page: str) -> None:
    assert calls.local_page(value, "/d") == page


def test_a_viewer_is_shown_the_workflows_and_schedules() -> None:
    viewer = from_token(forge({"alg": "ES256"}, {"sub": "vera", "roles": ["viewer"]}))  # read unverified
    assert {"Workflows", "Schedules"} <= {title for _, title, method in NAVIGATION if viewer.may(method)}
