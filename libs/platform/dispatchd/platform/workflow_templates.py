"""A workflow step's payload template: JSON in which `{"$ref": "..."}` nodes are replaced.

Invariant: a template is data, never code. The only operation is a lookup: a reference is
`input` or `steps.<id>.result`, followed by any number of `.key` segments (a digit segment
indexes a list). Nothing is evaluated, formatted or interpolated into a string, so an
untrusted input or result can only ever become a JSON value in the payload.

`references` lists a template's references (validation checks them against the step's
ancestors at registration); `resolve` builds the payload when the step is released.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

REF = "$ref"
_STEP_ID = r"[a-z0-9][a-z0-9_-]{0,63}"
STEP_ID = re.compile(_STEP_ID)
# `input(.k)*` or `steps.<id>.result(.k)*`; keys are any characters but the dot.
MAX_DEPTH = 64  # templates are checked (and resolved) recursively
_REFERENCE = re.compile(rf"(?:input|steps\.(?P<step>{_STEP_ID})\.result)(?P<path>(?:\.[^.]+)*)")


class TemplateError(ValueError):
    """A template that is malformed, or whose reference cannot be resolved."""


def _is_ref(node: Any) -> bool:
    return isinstance(node, dict) and REF in node


def references(template: Any, depth: int = 0) -> Iterator[str]:
    """Every reference string in `template`; TemplateError on a malformed `$ref` node."""
    if depth > MAX_DEPTH:
        raise TemplateError(f"the template nests deeper than {MAX_DEPTH} levels")
    if _is_ref(template):
        ref = template[REF]
        if len(template) != 1 or not isinstance(ref, str) or _REFERENCE.fullmatch(ref) is None:
            raise TemplateError(
                f"{json.dumps(template)[:120]} is not a reference: use exactly "
                '{"$ref": "input.<path>"} or {"$ref": "steps.<id>.result.<path>"}'
            )
        yield ref
    elif isinstance(template, dict):
        for value in template.values():
            yield from references(value, depth + 1)
    elif isinstance(template, list):
        for value in template:
            yield from references(value, depth + 1)


def referenced_step(ref: str) -> str | None:
    """The step id a reference reads the result of (None for `input`)."""
    match = _REFERENCE.fullmatch(ref)
    assert match is not None, "references() vetted it"
    return match.group("step")


def _walk(value: Any, ref: str, path: str) -> Any:
    for key in path.split(".")[1:]:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"reference {ref!r}: {key!r} is not in the value it reads")
    return value


def resolve(template: Any, run_input: Any, results: Mapping[str, Any]) -> Any:
    """`template` with each reference replaced by the value it names (TemplateError if absent)."""
    if _is_ref(template):
        ref = template[REF]
        match = _REFERENCE.fullmatch(ref)
        if match is None:
            raise TemplateError(f"{ref!r} is not a reference")
        step = match.group("step")
        if step is None:
            return _walk(run_input, ref, match.group("path"))
        if step not in results:
            raise TemplateError(f"reference {ref!r}: step {step!r} has no result")
        return _walk(results[step], ref, match.group("path"))
    if isinstance(template, dict):
        return {key: resolve(value, run_input, results) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, run_input, results) for value in template]
    return template


def decode(data: bytes | None) -> Any:
    """A payload or result as a template sees it: JSON if it parses, else its text, None when absent."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        pass
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TemplateError("a result that is neither JSON nor UTF-8 text cannot be referenced") from None


def default_template(depends_on: list[str]) -> dict[str, Any]:
    """What a step without a payload gets: the run's input and every parent's result."""
    return {
        "input": {REF: "input"},
        "parents": {parent: {REF: f"steps.{parent}.result"} for parent in depends_on},
    }
