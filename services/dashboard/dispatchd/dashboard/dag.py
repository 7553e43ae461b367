"""A workflow run's steps as a small left-to-right drawing, laid out here and drawn as inline SVG.

Invariant: pure geometry, no I/O. A step's column is the length of the longest path from a root
to it, so every edge points right (a parent's column is always less than its child's); within a
column steps keep their definition order. A dependency the run does not list is not drawn (the
server validated the definition; the drawing never invents a step). Runs too large to read as a
picture get none (`layout` returns None) and the steps table alone tells the story.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_WIDTH, NODE_HEIGHT = 150, 36
COLUMN_GAP, ROW_GAP, MARGIN = 46, 14, 4
MAX_STEPS = 60


@dataclass(frozen=True)
class Node:
    step_id: str
    status: str
    job_id: str
    x: int
    y: int


@dataclass(frozen=True)
class Drawing:
    nodes: tuple[Node, ...]
    edges: tuple[str, ...]  # SVG path data, one per dependency
    width: int
    height: int
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


def columns(depends_on: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's column: 0 for a root, else one more than its furthest parent's."""
    found: dict[str, int] = {}

    def column(step: str, path: frozenset[str]) -> int:
        if step not in found:
            parents = [p for p in depends_on.get(step, ()) if p in depends_on and p not in path]
            found[step] = 1 + max((column(p, path | {step}) for p in parents), default=-1)
        return found[step]

    for step in depends_on:
        column(step, frozenset())
    return found


def layout(steps: Sequence[tuple[str, Sequence[str], str, str]]) -> Drawing | None:
    """Steps as (id, depends_on, status, job_id), in definition order; None when too many to draw."""
    if not steps or len(steps) > MAX_STEPS:
        return None
    column_of = columns({step_id: parents for step_id, parents, _, _ in steps})
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for step_id, _, status, job_id in steps:
        col = column_of[step_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        x = MARGIN + col * (NODE_WIDTH + COLUMN_GAP)
        nodes[step_id] = Node(step_id, status, job_id, x, MARGIN + row * (NODE_HEIGHT + ROW_GAP))
    edges = tuple(
        _edge(nodes[parent], nodes[step_id])
        for step_id, parents, _, _ in steps
        for parent in parents
        if parent in nodes
    )
    width = 2 * MARGIN + (max(column_of.values()) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = 2 * MARGIN + max(rows.values()) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return Drawing(tuple(nodes.values()), edges, width, height)


def _edge(parent: Node, child: Node) -> str:
    """A curve from the parent's right side to the child's left side."""
    x1, y1 = parent.x + NODE_WIDTH, parent.y + NODE_HEIGHT // 2
    x2, y2 = child.x, child.y + NODE_HEIGHT // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
