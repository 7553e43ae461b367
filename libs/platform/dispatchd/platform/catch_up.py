"""What a schedule does with the fire times that came due: the catch-up and overlap rules.

Pure functions over times and flags, so the rules are tested without clocks or databases.

Invariants: every fire time in (cursor, now] is decided exactly once — fired or dropped — and
the schedule's cursor then moves to `now`, so the next decision starts where this one ended.
A fire time is *on time* while it is at most `grace` old: it always fires (a leader that woke a
few milliseconds late, or a takeover shorter than the grace, loses nothing). Older ones were
*missed* (the scheduler was down, or the schedule was created or resumed after them — those
never count, see store.schedules), and the policy decides:

- SKIP: missed fire times are dropped;
- ONCE: they collapse into one fire, at the latest missed time;
- ALL: each fires, up to `limit` of them (the most recent; older ones are dropped).

Overlap: ALLOW starts a job for every fire; SKIP starts one only when the schedule's previous
job is no longer active, so among fires decided together at most the first starts a job.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from dispatchd.platform.timing import Timing

# Bound on on-time fires decided at once: a grace holding more is a misconfiguration.
MAX_ON_TIME = 10_000


class CatchUp(enum.IntEnum):
    """Values are the wire enum's (dispatchd.v1.CatchUpPolicy)."""

    SKIP = 1
    ONCE = 2
    ALL = 3


class Overlap(enum.IntEnum):
    """Values are the wire enum's (dispatchd.v1.OverlapPolicy)."""

    ALLOW = 1
    SKIP = 2


@dataclass(frozen=True, slots=True)
class Plan:
    fire: list[dt.datetime]  # in order
    dropped: int  # missed fire times the policy did not fire


def plan(
    timing: Timing,
    cursor: dt.datetime,
    now: dt.datetime,
    *,
    policy: CatchUp,
    limit: int,
    grace: dt.timedelta,
) -> Plan:
    """Decide every fire time in (cursor, now]; see the module docstring."""
    if now <= cursor:
        return Plan([], 0)
    cutoff = max(cursor, now - grace)
    on_time, _ = timing.due(cutoff, now, MAX_ON_TIME)
    if cutoff == cursor:
        return Plan(on_time, 0)
    keep = {CatchUp.SKIP: 0, CatchUp.ONCE: 1, CatchUp.ALL: max(0, limit)}[policy]
    missed, total = timing.due(cursor, cutoff, keep)
    return Plan(missed + on_time, total - len(missed))


def starts(count: int, *, overlap: Overlap, previous_active: bool) -> list[bool]:
    """For `count` fires decided together, in order: whether each starts a job."""
    if overlap is Overlap.ALLOW:
        return [True] * count
    return [i == 0 and not previous_active for i in range(count)]
