"""When a schedule fires: a cron expression in an IANA time zone, or a fixed interval.

Invariants: fire times are strictly increasing instants (aware, UTC), each computed from the
previous one alone, so any process computing "the fire times after T" gets the same answer.

Cron expressions (5 fields, or @hourly/@daily/@weekly/@monthly/@yearly and croniter's other
aliases) are parsed by croniter and matched against the *wall clock* of the time zone, so
`0 9 * * *` is 09:00 local in summer and in winter. Daylight-saving transitions:

- spring forward: a wall-clock time that does not exist that day (02:30 in Europe/Berlin on
  the last Sunday of March) fires once, at the first instant after the gap (03:00 local); if
  the expression also matches that instant, the two are one fire;
- fall back: a wall-clock time that occurs twice (01:30 in America/New_York on the first
  Sunday of November) fires once, at its first occurrence.

An interval fires at anchor + k * interval (k >= 1), in absolute time: DST does not apply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from dispatchd.platform.errors import InvalidArgument

UTC = dt.UTC
ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
MIN_INTERVAL = dt.timedelta(milliseconds=100)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; InvalidArgument naming `time_zone` when there is none."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long for a path
        raise InvalidArgument(f"time_zone: unknown IANA time zone {name!r}") from exc


def check_cron(expression: str) -> str:
    """The normalized expression; InvalidArgument naming `cron` when croniter cannot parse it."""
    text = " ".join(expression.split())
    if text.lower() in ALIASES:
        return text.lower()
    if len(text.split(" ")) != 5:
        raise InvalidArgument(f"cron: {expression!r} needs 5 fields (minute hour day month weekday) or an @alias")
    if not croniter.is_valid(text):
        raise InvalidArgument(f"cron: {expression!r} is not a valid cron expression")
    try:  # valid syntax that matches no date at all (30 February) would fail every fire
        croniter(text, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise InvalidArgument(f"cron: {expression!r} matches no date") from None
    return text


def _exists(naive: dt.datetime, tz: ZoneInfo) -> bool:
    aware = naive.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive


def _gap_end(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The first instant after the spring-forward gap holding the non-existent `naive`."""
    # Read with the offset after the gap it is too early, with the one before too late: the
    # transition lies between; transitions fall on whole minutes, so search minutes.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    low, high = min(low, high), max(low, high)
    after = high.astimezone(tz).utcoffset()
    while high - low > dt.timedelta(minutes=1):
        middle = low + (high - low) / 2
        middle = middle.replace(second=0, microsecond=0)
        if middle <= low:
            break
        if middle.astimezone(tz).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high


def wall_to_instant(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant a wall-clock time of `tz` fires at (see the module docstring)."""
    if not _exists(naive, tz):
        return _gap_end(naive, tz)
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's fire times: `cron` in `time_zone`, or every `interval` from `anchor`."""

    cron: str | None = None
    time_zone: str = "UTC"
    interval: dt.timedelta | None = None
    anchor: dt.datetime | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise InvalidArgument("set exactly one of cron and interval")
        if self.interval is not None:
            if self.interval < MIN_INTERVAL:
                raise InvalidArgument(f"interval: must be at least {MIN_INTERVAL.total_seconds()} s")
            if self.anchor is None:
                raise InvalidArgument("an interval needs an anchor time")
        if self.cron is not None:
            object.__setattr__(self, "cron", check_cron(self.cron))
        zone(self.time_zone)

    def next_after(self, instant: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `instant`."""
        if self.interval is not None:
            assert self.anchor is not None
            if instant < self.anchor:
                return self.anchor + self.interval if instant < self.anchor + self.interval else self.anchor
            steps = (instant - self.anchor) // self.interval + 1
            return self.anchor + steps * self.interval
        assert self.cron is not None
        tz = zone(self.time_zone)
        # Walk the wall clock; in a repeated hour a wall time maps to its first occurrence,
        # which can lie before `instant`: keep walking until past it.
        wall = instant.astimezone(tz).replace(tzinfo=None, fold=0)
        walker = croniter(self.cron, wall)
        while True:
            candidate = wall_to_instant(walker.get_next(dt.datetime), tz)
            if candidate > instant:
                return candidate

    def fire_times(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Every fire time strictly after `after`, in order (endless)."""
        current = after
        while True:
            current = self.next_after(current)
            yield current

    def due(self, after: dt.datetime, until: dt.datetime, limit: int) -> tuple[list[dt.datetime], int]:
        """Fire times in (after, until]: the last `limit` of them, and how many there were in all.

        Counts without keeping more than `limit`, so a long downtime of a frequent schedule costs
        arithmetic for an interval and a walk for cron, never memory.
        """
        if self.interval is not None:
            assert self.anchor is not None
            first = self.next_after(after)
            if first > until:
                return [], 0
            total = (until - first) // self.interval + 1
            start = max(0, total - limit)
            return [first + k * self.interval for k in range(start, total)], total
        kept: list[dt.datetime] = []
        total = 0
        for fire in self.fire_times(after):
            if fire > until:
                break
            total += 1
            kept.append(fire)
            if len(kept) > limit:
                kept.pop(0)
        return kept, total
