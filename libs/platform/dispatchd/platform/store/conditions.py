"""WHERE conditions of optional filters, numbered as they are added.

Invariant: a condition is added only together with its value, and its placeholder is the
position of that value in the statement's arguments, so the two cannot get out of step.
"""

from __future__ import annotations


def where_set(args: list[object], *conditions: tuple[str, object]) -> list[str]:
    """The conditions whose value is set (not None), in order.

    Each condition marks its placeholder with `{}`, as in `("j.finished_at >= {}", since)`;
    its value is appended to `args` and the `{}` becomes that value's `$n`.
    """
    where: list[str] = []
    for condition, value in conditions:
        if value is not None:
            args.append(value)
            where.append(condition.format(f"${len(args)}"))
    return where
