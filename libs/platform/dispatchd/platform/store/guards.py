"""The state sets of `states.py` spelled as SQL, once, at import: the only statuses in a statement.

Store statements interpolate these strings instead of writing status numbers, so a guard
cannot drift from the transition table (tests/unit/test_store_sql.py fails on a number
written next to a status). They are constants rather than query parameters on purpose:
the statement text stays fixed, so asyncpg keeps it prepared, and the planner sees the
literal set and can use the migrations' partial indexes (on the owned and the queued
executions) even in a generic plan, which it cannot prove for a `$n` array.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


def value(status: IntEnum) -> str:
    """One status as a SQL literal (an assignment or a CASE arm)."""
    return str(int(status))


def one_of(column: str, statuses: Iterable[IntEnum]) -> str:
    """`column` is one of `statuses`: `= n` for one, `= ANY(ARRAY[...])` for several."""
    values = sorted({int(s) for s in statuses})
    if not values:
        raise ValueError(f"no status can satisfy a guard on {column}")
    if len(values) == 1:
        return f"{column} = {values[0]}"
    return f"{column} = ANY(ARRAY[{', '.join(map(str, values))}]::smallint[])"
