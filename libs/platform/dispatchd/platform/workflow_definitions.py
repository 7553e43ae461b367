"""A workflow definition, validated: a name and steps forming a DAG, each step a job's spec.

Invariant: `parse` is the one gate. Every definition, whether it arrives by RegisterWorkflow
or from a YAML file, is the same plain document (`canonical` returns it) and passes here
before it is stored: step ids are well-formed and unique, every dependency names a step,
the dependencies form no cycle, every template reference reads the input or the result of
one of the step's ancestors, and each step's job options are those SubmitJob accepts.
Every refusal is InvalidArgument naming the step (and the field).

The document (YAML keys, the JSON Schema in schemas/workflow.schema.json):
    name: etl.nightly
    steps:
      - id: extract                     # [a-z0-9][a-z0-9_-]{0,63}
        job_type: etl.extract
        payload: {"source": {"$ref": "input.source"}}   # optional; see workflow_templates
        depends_on: []                  # step ids
        continue_on_failure: false
        retry: {max_attempts: 3, initial_backoff_ms: 5000, max_backoff_ms: 60000}
        execution_timeout_ms: 30000
        priority: 0
        metadata: {team: data}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatchd.common import names
from dispatchd.common.workflow_fields import DEFINITION_FIELDS, RETRY_FIELDS, STEP_FIELDS
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.workflow_templates import (
    STEP_ID,
    TemplateError,
    default_template,
    referenced_step,
    references,
)

MAX_STEPS = 200
MAX_PRIORITY = 1000
MAX_METADATA_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class StepSpec:
    id: str
    job_type: str
    payload: Any  # the template
    depends_on: tuple[str, ...]
    continue_on_failure: bool
    retry: RetryPolicy
    retry_policy_set: bool
    execution_timeout_ms: int | None
    priority: int
    metadata: Mapping[str, str]

    def canonical(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "job_type": self.job_type,
            "payload": self.payload,
            "depends_on": list(self.depends_on),
            "continue_on_failure": self.continue_on_failure,
            "execution_timeout_ms": self.execution_timeout_ms,
            "priority": self.priority,
            "metadata": dict(sorted(self.metadata.items())),
        }
        if self.retry_policy_set:
            doc["retry"] = {
                "max_attempts": self.retry.max_attempts,
                "initial_backoff_ms": self.retry.initial_backoff_ms,
                "max_backoff_ms": self.retry.max_backoff_ms,
            }
        return doc


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    steps: tuple[StepSpec, ...]

    def canonical(self) -> dict[str, Any]:
        """The definition as stored (and hashed): defaults filled in, keys in one order."""
        return {"name": self.name, "steps": [s.canonical() for s in self.steps]}

    def digest(self) -> bytes:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()).digest()


def _fail(step: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"step {step!r}: {message}")


def _int(doc: Mapping[str, Any], key: str, step: str, default: int | None) -> int | None:
    value = doc.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(step, f"{key} must be an integer")
    return value


def _retry(doc: Any, step: str) -> tuple[RetryPolicy, bool]:
    if doc is None:
        return RetryPolicy(), False
    if not isinstance(doc, dict) or set(doc) - RETRY_FIELDS:
        raise _fail(step, f"retry must be a mapping of {', '.join(sorted(RETRY_FIELDS))}")
    parts = [_int(doc, key, step, None) for key in ("max_attempts", "initial_backoff_ms", "max_backoff_ms")]
    try:
        return RetryPolicy.from_parts(*parts), True
    except InvalidArgument as exc:
        raise _fail(step, str(exc)) from None


def _metadata(doc: Any, step: str) -> dict[str, str]:
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise _fail(step, "metadata must map strings to strings")
    if len(doc) > MAX_METADATA_ENTRIES:
        raise _fail(step, f"metadata has {len(doc)} entries; at most {MAX_METADATA_ENTRIES} are allowed")
    for key, text in doc.items():
        if not key or len(key) > 256 or names.has_control_characters(key):
            raise _fail(step, f"metadata key {names.preview(key)} must be 1-256 characters, no control characters")
        if len(text) > 4096:
            raise _fail(step, f"metadata value of {names.preview(key)} exceeds 4096 characters")
    return dict(doc)


def _step(doc: Any, position: int) -> StepSpec:
    if not isinstance(doc, dict):
        raise InvalidArgument(f"steps[{position}] must be a mapping")
    step_id = doc.get("id")
    if not isinstance(step_id, str) or STEP_ID.fullmatch(step_id) is None:
        raise InvalidArgument(f"steps[{position}].id {step_id!r} must be 1-64 characters of [a-z0-9_-]")
    unknown = set(doc) - STEP_FIELDS
    if unknown:
        raise _fail(step_id, f"unknown field(s) {', '.join(sorted(unknown))}")
    try:
        job_type = names.job_type(str(doc.get("job_type", "")), "job_type")
    except names.InvalidName as exc:
        raise _fail(step_id, str(exc)) from None
    depends_on = doc.get("depends_on") or []
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise _fail(step_id, "depends_on must be a list of step ids")
    if len(set(depends_on)) != len(depends_on):
        raise _fail(step_id, "depends_on names a step twice")
    continue_on_failure = doc.get("continue_on_failure", False)
    if not isinstance(continue_on_failure, bool):
        raise _fail(step_id, "continue_on_failure must be true or false")
    priority = _int(doc, "priority", step_id, 0)
    assert priority is not None
    if not 0 <= priority <= MAX_PRIORITY:
        raise _fail(step_id, f"priority must be between 0 and {MAX_PRIORITY}")
    timeout = _int(doc, "execution_timeout_ms", step_id, None)
    if timeout is not None and timeout <= 0:
        raise _fail(step_id, "execution_timeout_ms must be positive")
    retry, retry_set = _retry(doc.get("retry"), step_id)
    payload = doc["payload"] if "payload" in doc else default_template(depends_on)
    return StepSpec(
        step_id,
        job_type,
        payload,
        tuple(depends_on),
        continue_on_failure,
        retry,
        retry_set,
        timeout,
        priority,
        _metadata(doc.get("metadata"), step_id),
    )


def _check_graph(steps: tuple[StepSpec, ...]) -> None:
    by_id = {s.id: s for s in steps}
    for step in steps:
        for parent in step.depends_on:
            if parent not in by_id:
                raise _fail(step.id, f"depends_on names unknown step {parent!r}")
    # Depth-first with colours: meeting a grey step again closes a cycle through it.
    colour: dict[str, int] = {}

    def visit(step_id: str) -> None:
        colour[step_id] = 1
        for parent in by_id[step_id].depends_on:
            if colour.get(parent) == 1:
                raise _fail(parent, f"is part of a dependency cycle (through {step_id!r})")
            if parent not in colour:
                visit(parent)
        colour[step_id] = 2

    for step in steps:
        if step.id not in colour:
            visit(step.id)


def ancestors(steps: tuple[StepSpec, ...]) -> dict[str, set[str]]:
    """Each step's transitive dependencies (the graph must be acyclic)."""
    by_id = {s.id: s for s in steps}
    found: dict[str, set[str]] = {}

    def of(step_id: str) -> set[str]:
        if step_id not in found:
            found[step_id] = set()
            for parent in by_id[step_id].depends_on:
                found[step_id] |= {parent} | of(parent)
        return found[step_id]

    for step in steps:
        of(step.id)
    return found


def _check_templates(steps: tuple[StepSpec, ...]) -> None:
    above = ancestors(steps)
    for step in steps:
        try:
            refs = list(references(step.payload))
        except TemplateError as exc:
            raise _fail(step.id, f"payload: {exc}") from None
        for ref in refs:
            target = referenced_step(ref)
            if target is not None and target not in above[step.id]:
                raise _fail(step.id, f"payload reference {ref!r} reads step {target!r}, which it does not depend on")


def parse(doc: Any) -> Definition:
    """The validated definition of a document (a mapping as YAML or JSON would give it)."""
    if not isinstance(doc, dict):
        raise InvalidArgument("a workflow definition must be a mapping with name and steps")
    unknown = set(doc) - DEFINITION_FIELDS
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(sorted(unknown))}; a definition has name and steps")
    try:
        name = names.job_type(str(doc.get("name", "")), "workflow name")
    except names.InvalidName as exc:
        raise InvalidArgument(str(exc)) from None
    raw = doc.get("steps")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STEPS:
        raise InvalidArgument(f"steps must be a list of 1 to {MAX_STEPS} steps")
    steps = tuple(_step(s, i) for i, s in enumerate(raw))
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise _fail(step.id, "duplicate step id")
        seen.add(step.id)
    _check_graph(steps)
    _check_templates(steps)
    definition = Definition(name, steps)
    if "\\u0000" in json.dumps(definition.canonical()):
        raise InvalidArgument("a workflow definition may not contain NUL characters (Postgres cannot store them)")
    return definition
