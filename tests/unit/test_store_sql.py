"""No store statement writes a status number: every status in SQL comes from `states.py`.

The checker reads the source of every module of `dispatchd.platform.store` and of the
services, and looks in each string constant (f-strings with their `{...}` parts blanked)
for a digit compared with, assigned to, or inserted into a `status` column. Its own tests
plant literals to prove it catches them.
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections.abc import Iterator

import pytest

import dispatchd.platform.store
from dispatchd.platform.states import EXECUTION_OWNED, EXECUTION_SETTLEABLE, ExecutionStatus
from dispatchd.platform.store import executions, guards, settlements

ROOT = pathlib.Path(__file__).resolve().parents[2]

_COMPARED = re.compile(
    r"\bstatus\s*(?:=|<>|!=|<=|>=|<|>)\s*(?:ANY\s*)?[(\s]*(?:ARRAY\s*\[\s*)?\d"
    r"|\bstatus\s+(?:NOT\s+)?IN\s*\(\s*\d"
    r"|\d\s*(?:=|<>|!=)\s*(?:\w+\.)?status\b",
    re.IGNORECASE,
)
_CASE = re.compile(r"\bstatus\s*=\s*CASE\b(.*?)\bEND\b", re.IGNORECASE | re.DOTALL)
_CASE_ARM = re.compile(r"\b(?:THEN|ELSE)\s+\d", re.IGNORECASE)
_INSERT = re.compile(r"INSERT\s+INTO\s+\w+\s*\(([^)]*)\)\s*(?:VALUES\s*\(|SELECT\b)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


def _values(sql: str, start: int) -> list[str]:
    """The top-level, comma-separated expressions from `start` to the closing `)` or FROM."""
    items: list[str] = []
    depth = 0
    current = ""
    for i, char in enumerate(sql[start:], start):
        if depth == 0 and (char == ")" or re.match(r"\bFROM\b", sql[i:], re.IGNORECASE)):
            break
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return items


def status_literals(sql: str) -> list[str]:
    """Every place in `sql` where a status is written as a number."""
    found = [m.group(0) for m in _COMPARED.finditer(sql)]
    for case in _CASE.finditer(sql):
        found += [f"status = CASE ... {arm.group(0)}" for arm in _CASE_ARM.finditer(case.group(1))]
    for insert in _INSERT.finditer(sql):
        columns = [c.strip().lower() for c in insert.group(1).split(",")]
        if "status" in columns:
            values = _values(sql, insert.end())
            index = columns.index("status")
            if index < len(values) and _NUMBER.fullmatch(values[index]):
                found.append(f"INSERT ... status = {values[index]}")
    return found


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    parts_of_fstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = ""
            for part in node.values:
                parts_of_fstrings.add(id(part))
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    text += part.value
                else:
                    text += "{}"  # a formatted value: derived, never a literal
            yield node.lineno, text
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings:
            yield node.lineno, node.value


def literals_in_source(source: str) -> list[str]:
    return [f"line {line}: {hit}" for line, text in _strings(ast.parse(source)) for hit in status_literals(text)]


def _sources() -> list[pathlib.Path]:
    store = [p for path in dispatchd.platform.store.__path__ for p in pathlib.Path(path).glob("*.py")]
    services = sorted((ROOT / "services").glob("*/dispatchd/**/*.py"))
    return sorted(store) + services


def test_the_scan_covers_the_store_and_the_services() -> None:
    names = {p.name for p in _sources()}
    assert {"executions.py", "repairs.py", "workers.py", "jobs.py", "dead_letters.py", "reconciler.py"} <= names


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(p.parents[2])))
def test_no_status_number_in_a_statement(path: pathlib.Path) -> None:
    assert literals_in_source(path.read_text()) == [], "use the sets of states.py through store.guards"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE executions SET status = 2, worker_id = $2 WHERE execution_id = $1",
        "SELECT 1 FROM executions WHERE e.status = ANY(ARRAY[2, 3]::smallint[])",
        "SELECT 1 FROM executions WHERE status = ANY ( ARRAY [1,2,3])",
        "UPDATE executions SET status = CASE WHEN attempt >= $3 THEN 6 ELSE 5 END",
        "SELECT 1 FROM executions WHERE status IN (2, 3)",
        "UPDATE workers SET status = $1 WHERE w.status <> 4",
        "SELECT 1 FROM jobs j WHERE 5 = j.status",
        "INSERT INTO executions (execution_id, job_id, attempt, status) VALUES ($1, $2, $3, 1)",
        "INSERT INTO jobs (job_id, status, payload) SELECT $1, 1, $2 FROM n",
    ],
)
def test_the_checker_catches_a_planted_literal(sql: str) -> None:
    assert status_literals(sql), sql
    assert literals_in_source(f"STATEMENT = f'''{sql} {{guard}}'''\n"), "missed inside an f-string"
    assert literals_in_source(f"def f():\n    return run({sql!r})\n"), "missed inside a call"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE executions SET status = $2 WHERE status = ANY($3::smallint[])",
        "UPDATE executions SET status = {} WHERE {} AND attempt = 1 LIMIT 1",
        "INSERT INTO executions (execution_id, job_id, attempt, status) VALUES ($1, $2, 1, {})",
        "INSERT INTO jobs (job_id, attempts, status) SELECT $1, 1, {} FROM n",
        "UPDATE scheduler_fence SET epoch = 2 WHERE id = 1",
    ],
)
def test_the_checker_passes_derived_statuses(sql: str) -> None:
    assert status_literals(sql) == []


def test_guards_spell_the_state_sets() -> None:
    assert guards.one_of("e.status", EXECUTION_OWNED) == "e.status = ANY(ARRAY[2, 3]::smallint[])"
    assert guards.one_of("status", [ExecutionStatus.QUEUED]) == "status = 1"
    assert guards.value(ExecutionStatus.CANCELED) == "7"
    with pytest.raises(ValueError, match="no status"):
        guards.one_of("status", [])


def test_hot_statements_are_formatted_once() -> None:
    # Constants, not per-call strings: the text never changes, so the prepared statement is reused.
    assert guards.one_of("e.status", [ExecutionStatus.QUEUED]) in executions._CLAIM
    assert guards.one_of("e.status", EXECUTION_SETTLEABLE) in settlements._LOCK_AND_SUCCEED
    assert guards.one_of("status", EXECUTION_OWNED) in executions._FAIL
