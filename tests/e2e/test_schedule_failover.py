"""A schedule firing every second while the scheduler leader is SIGKILLed: none missed, none doubled.

Two scheduler processes; the drill of `make drill-schedule` (perf.schedule_drill) for ~10 s
instead of a minute: every fire time between the first and the last has exactly one fire row
and one job, and the standby fired after the kill.
"""

from __future__ import annotations

import pytest

from dispatchd.devtools.stack import Stack
from perf.schedule_drill import measure

pytestmark = pytest.mark.e2e


async def test_every_second_schedule_survives_a_leader_kill(stack: Stack) -> None:
    result = await measure(stack, seconds=10, kill_after=3)
    assert result["passed"], result
    assert result["fires_recorded"] == result["fires_expected"] == result["jobs"] >= 7
    assert result["takeover"]["successor"] != result["takeover"]["killed"]
