"""Schedule timing and catch-up rules: DST transitions, intervals, catch-up and overlap policies.

Pure functions: no clock, no sleep, no database.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from dispatchd.platform.catch_up import CatchUp, Overlap, plan, starts
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.timing import Timing

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *fields: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=tz, fold=fold).astimezone(UTC)  # type: ignore[misc]


def fires(timing: Timing, after: dt.datetime, count: int) -> list[dt.datetime]:
    it = timing.fire_times(after)
    return [next(it) for _ in range(count)]


def walls(times: list[dt.datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M%z") for t in times]


@pytest.mark.parametrize(
    ("tz", "day_before", "gap_end"),
    [
        # Berlin: 02:00 CET -> 03:00 CEST on 2026-03-29; New York: 02:00 EST -> 03:00 EDT on 2026-03-08.
        (BERLIN, (2026, 3, 28, 12), "03-29 03:00+0200"),
        (NEW_YORK, (2026, 3, 7, 12), "03-08 03:00-0400"),
    ],
)
def test_spring_forward_fires_a_skipped_time_once_when_the_gap_ends(
    tz: ZoneInfo, day_before: tuple[int, ...], gap_end: str
) -> None:
    timing = Timing(cron="30 2 * * *", time_zone=str(tz))
    got = walls(fires(timing, local(tz, *day_before), 3), tz)
    assert got[0] == gap_end  # 02:30 does not exist that day: the first valid instant after the gap
    assert [g[6:11] for g in got] == ["03:00", "02:30", "02:30"]


def test_spring_forward_hourly_fires_once_at_the_gap_end_not_twice() -> None:
    timing = Timing(cron="0 * * * *", time_zone="Europe/Berlin")
    got = walls(fires(timing, local(BERLIN, 2026, 3, 29, 0, 30), 3), BERLIN)
    # 02:00 does not exist and maps to 03:00, which the expression matches too: one fire.
    assert got == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]


# The repeated hour: 01:xx on 2026-11-01 in New York, 02:xx on 2026-10-25 in Berlin.
@pytest.mark.parametrize(("tz", "day", "hour"), [(NEW_YORK, (2026, 11, 1), 1), (BERLIN, (2026, 10, 25), 2)])
def test_fall_back_fires_a_repeated_time_once_at_its_first_occurrence(
    tz: ZoneInfo, day: tuple[int, int, int], hour: int
) -> None:
    timing = Timing(cron=f"30 {hour} * * *", time_zone=str(tz))
    first, second, third = fires(timing, local(tz, *day, 0, 0), 3)
    assert first == local(tz, *day, hour, 30, fold=0)
    # The next day's fire, not the second occurrence an hour later.
    assert second - first == dt.timedelta(hours=25) and third - second == dt.timedelta(hours=24)


def test_fall_back_half_hourly_covers_the_repeated_hour_once() -> None:
    timing = Timing(cron="*/30 * * * *", time_zone="America/New_York")
    got = walls(fires(timing, local(NEW_YORK, 2026, 11, 1, 0, 15), 5), NEW_YORK)
    assert got == ["11-01 00:30-0400", "11-01 01:00-0400", "11-01 01:30-0400", "11-01 02:00-0500", "11-01 02:30-0500"]


def test_cursor_inside_the_repeated_hour_moves_forward_only() -> None:
    timing = Timing(cron="*/30 * * * *", time_zone="America/New_York")
    second_one_fifteen = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1)
    assert walls([timing.next_after(second_one_fifteen)], NEW_YORK) == ["11-01 02:00-0500"]


def test_aliases_and_time_zones() -> None:
    daily = Timing(cron="@daily", time_zone="Asia/Tokyo")
    assert walls(fires(daily, dt.datetime(2026, 1, 1, tzinfo=UTC), 1), ZoneInfo("Asia/Tokyo")) == ["01-02 00:00+0900"]
    assert Timing(cron="  @HOURLY ").cron == "@hourly"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "matches no date"),
        ({"cron": "@daily", "time_zone": "a" * 5000}, "time_zone"),
        ({"cron": "0 9 * * *", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"interval": dt.timedelta(milliseconds=10), "anchor": dt.datetime(2026, 1, 1, tzinfo=UTC)}, "interval"),
        ({}, "cron and interval"),
    ],
)
def test_bad_timing_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        Timing(**kwargs)  # type: ignore[arg-type]


ANCHOR = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EVERY_10S = Timing(interval=dt.timedelta(seconds=10), anchor=ANCHOR)


def at(seconds: float) -> dt.datetime:
    return ANCHOR + dt.timedelta(seconds=seconds)


def test_interval_fires_on_its_grid_from_the_anchor() -> None:
    assert EVERY_10S.next_after(ANCHOR) == at(10)
    assert EVERY_10S.next_after(at(10)) == at(20)
    assert EVERY_10S.next_after(at(10.5)) == at(20)
    assert EVERY_10S.due(at(0), at(35), 100) == ([at(10), at(20), at(30)], 3)
    assert EVERY_10S.due(at(0), at(35), 2) == ([at(20), at(30)], 3)


GRACE = dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("policy", "limit", "fired", "dropped"),
    [
        # Down from 0 to 62 s: 10..50 were missed (older than the grace), 60 is on time.
        (CatchUp.SKIP, 0, [60], 5),
        (CatchUp.ONCE, 0, [50, 60], 4),
        (CatchUp.ALL, 100, [10, 20, 30, 40, 50, 60], 0),
        (CatchUp.ALL, 2, [40, 50, 60], 3),
    ],
)
def test_catch_up_after_downtime(policy: CatchUp, limit: int, fired: list[int], dropped: int) -> None:
    got = plan(EVERY_10S, at(0), at(62), policy=policy, limit=limit, grace=GRACE)
    assert got.fire == [at(s) for s in fired]
    assert got.dropped == dropped


@pytest.mark.parametrize("policy", list(CatchUp))
def test_on_time_fires_always_fire_and_nothing_is_decided_twice(policy: CatchUp) -> None:
    # A leader a little late (within the grace) loses nothing, whatever the policy.
    assert plan(EVERY_10S, at(15), at(23), policy=policy, limit=0, grace=GRACE).fire == [at(20)]
    # Everything up to the cursor was decided already.
    assert plan(EVERY_10S, at(20), at(23), policy=policy, limit=0, grace=GRACE).fire == []
    assert plan(EVERY_10S, at(20), at(20), policy=policy, limit=0, grace=GRACE).fire == []


def test_consecutive_plans_cover_every_fire_time_exactly_once() -> None:
    cursor, seen = at(0), []
    for now in (3, 11, 11, 29.5, 30, 30.001, 71):
        seen += plan(EVERY_10S, cursor, at(now), policy=CatchUp.ALL, limit=100, grace=GRACE).fire
        cursor = at(now)
    assert seen == [at(s) for s in range(10, 80, 10)]


def test_overlap_rules() -> None:
    assert starts(3, overlap=Overlap.ALLOW, previous_active=True) == [True, True, True]
    assert starts(3, overlap=Overlap.SKIP, previous_active=False) == [True, False, False]
    assert starts(2, overlap=Overlap.SKIP, previous_active=True) == [False, False]
    assert starts(0, overlap=Overlap.SKIP, previous_active=False) == []
