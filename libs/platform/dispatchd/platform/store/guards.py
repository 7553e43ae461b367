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


def checked(column: str, statuses: Iterable[IntEnum]) -> str:
    """`one_of` as a check on rows a statement already named by id, never a way to find them.

    `(guard) IS TRUE` means the same for a NOT NULL status, but the planner can neither scan a
    status index for it nor prove a partial index's predicate from it. A statement that names
    its rows by an array of ids then finds them by primary key whatever the statistics say:
    with statistics taken before a backlog (a queue of thousands looking like one row), the
    plain guard let the claim walk every queued execution and every active job through the
    status indexes (9.9 ms instead of 0.37 for 10 jobs with 3,000 queued; tests/integration/
    test_query_plans.py). Scans that select *by* status keep `one_of` and its indexes.
    """
    return f"({one_of(column, statuses)}) IS TRUE"
