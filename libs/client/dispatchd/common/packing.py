"""Packing what a stream has queued into batch messages, without reordering what matters.

Both ends of a worker stream that negotiated batches write what they queued since their
last write as few messages as possible: consecutive items of a packable kind (results,
start notices, assignments, acks) share one batch message per kind.

Invariant: `take` never lets one item overtake another that concerns the same execution,
and nothing crosses a barrier (an item the classifier does not pack: cancels, heartbeats,
log chunks, drain signals, the end marker). Items of different packable kinds may change
places only when they name different executions: the window closes before an item whose
execution already appears in it under another kind, and before any kind exceeds `cap`
items. Within a kind the order is kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

M = TypeVar("M")

# What a classifier says of an item: pack it as (kind, execution id), send it alone
# (None: a barrier), or drop it (DROP: e.g. a start notice folded into its result).
DROP: Final = ("", "")
Packable = tuple[str, str] | None
Classifier = Callable[[M], Packable]


def take(queue: deque[M], classify: Classifier[M], cap: int) -> list[list[M]]:
    """Pop the window at the head of `queue`: its groups of items, in the order they go out.

    A group of one kind holds 1 to `cap` items; a barrier at the head comes back alone as a
    group of one (classified None). `queue` must not be empty; dropped items are discarded
    and may leave nothing to send (an empty list).
    """
    groups: dict[str, list[M]] = {}
    owner: dict[str, str] = {}  # execution id -> the kind it appeared under in this window
    while queue:
        item = queue[0]
        packable = classify(item)
        if packable is DROP:
            queue.popleft()
            continue
        if packable is None:
            if not groups:
                queue.popleft()
                return [[item]]
            break
        kind, execution_id = packable
        group = groups.get(kind)
        if group is not None and len(group) >= cap:
            break
        if execution_id:
            seen = owner.setdefault(execution_id, kind)
            if seen != kind:
                break
        queue.popleft()
        if group is None:
            groups[kind] = [item]
        else:
            group.append(item)
    return list(groups.values())
