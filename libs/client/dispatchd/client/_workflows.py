"""Workflows in the client: definitions as documents, runs as frozen dataclasses, and the calls.

Invariants: a definition goes out as the document a YAML file holds (the keys of the
server's `workflow_definitions`: name, steps with id, job_type, payload, depends_on,
continue_on_failure, retry, execution_timeout_ms, priority, metadata); a key the wire
cannot carry is a ValueError here, never silently dropped. The server validates the rest.
`start_workflow` generates its idempotency key once, so a retried start never makes two runs.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2

from dispatchd.client._models import JobStatus, _enum, _same_named
from dispatchd.common.workflow_fields import DEFINITION_FIELDS, RETRY_FIELDS, STEP_FIELDS
from dispatchd.v1 import common_pb2, workflow_pb2


class WorkflowRunStatus(enum.IntEnum):
    UNSPECIFIED = workflow_pb2.WORKFLOW_RUN_STATUS_UNSPECIFIED
    RUNNING = workflow_pb2.WORKFLOW_RUN_STATUS_RUNNING
    SUCCEEDED = workflow_pb2.WORKFLOW_RUN_STATUS_SUCCEEDED
    FAILED = workflow_pb2.WORKFLOW_RUN_STATUS_FAILED
    CANCELED = workflow_pb2.WORKFLOW_RUN_STATUS_CANCELED

    @property
    def terminal(self) -> bool:
        """Nothing more will happen unless a failed step is redriven (FAILED) ."""
        return self in (WorkflowRunStatus.SUCCEEDED, WorkflowRunStatus.FAILED, WorkflowRunStatus.CANCELED)


def _ms(value: Any, where: str) -> duration_pb2.Duration:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be a whole number of milliseconds")
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def _step(doc: Mapping[str, Any]) -> workflow_pb2.WorkflowStep:
    unknown = set(doc) - STEP_FIELDS
    where = f"step {doc.get('id')!r}"
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    step = workflow_pb2.WorkflowStep(
        id=str(doc.get("id", "")),
        job_type=str(doc.get("job_type", "")),
        depends_on=[str(d) for d in doc.get("depends_on") or []],
        continue_on_failure=bool(doc.get("continue_on_failure", False)),
        priority=int(doc.get("priority", 0)),
        metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
    )
    if "payload" in doc:
        step.payload_template_json = json.dumps(doc["payload"])
    retry = doc.get("retry")
    if retry is not None:
        unknown = set(retry) - RETRY_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown retry field(s) {', '.join(sorted(unknown))}")
        policy = common_pb2.RetryPolicy(max_attempts=int(retry.get("max_attempts", 0)))
        if "initial_backoff_ms" in retry:
            policy.initial_backoff.CopyFrom(_ms(retry["initial_backoff_ms"], f"{where}: initial_backoff_ms"))
        if "max_backoff_ms" in retry:
            policy.max_backoff.CopyFrom(_ms(retry["max_backoff_ms"], f"{where}: max_backoff_ms"))
        step.retry_policy.CopyFrom(policy)
    if doc.get("execution_timeout_ms") is not None:
        step.execution_timeout.CopyFrom(_ms(doc["execution_timeout_ms"], f"{where}: execution_timeout_ms"))
    return step


def definition_message(doc: Mapping[str, Any]) -> workflow_pb2.WorkflowDefinition:
    """The RegisterWorkflow message of a definition document (as a YAML file holds it)."""
    unknown = set(doc) - DEFINITION_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; a definition has name and steps")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
        raise ValueError("steps must be a list of mappings")
    return workflow_pb2.WorkflowDefinition(name=str(doc.get("name", "")), steps=[_step(s) for s in steps])


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    version: int
    source: str
    created_at: dt.datetime | None
    steps: tuple[str, ...]  # step ids, in order
    raw: workflow_pb2.WorkflowDefinition = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: workflow_pb2.WorkflowDefinition) -> WorkflowDefinition:
        return cls(
            **_same_named(message, "name version source", "created_at"),
            steps=tuple(s.id for s in message.steps),
            raw=message,
        )


@dataclass(frozen=True)
class WorkflowRunStep:
    step_id: str
    job_id: str
    job_type: str
    status: JobStatus
    attempts: int
    depends_on: tuple[str, ...]
    error_message: str
    result: bytes
    created_at: dt.datetime | None
    released_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_proto(cls, message: workflow_pb2.WorkflowRunStep) -> WorkflowRunStep:
        return cls(
            **_same_named(
                message, "step_id job_id job_type attempts error_message result", "created_at released_at finished_at"
            ),
            status=_enum(JobStatus, message.status),
            depends_on=tuple(message.depends_on),
        )


@dataclass(frozen=True)
class WorkflowRun:
    run_id: str
    workflow_name: str
    workflow_version: int
    status: WorkflowRunStatus
    input: bytes
    idempotency_key: str
    error_message: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    finished_at: dt.datetime | None
    steps: tuple[WorkflowRunStep, ...]  # empty in listings
    raw: workflow_pb2.WorkflowRun = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: workflow_pb2.WorkflowRun) -> WorkflowRun:
        return cls(
            **_same_named(
                message,
                "run_id workflow_name workflow_version input idempotency_key error_message",
                "created_at updated_at finished_at",
            ),
            status=_enum(WorkflowRunStatus, message.status),
            steps=tuple(WorkflowRunStep.from_proto(s) for s in message.steps),
            raw=message,
        )


def start_request(
    name: str, run_input: Any, *, version: int | None, idempotency_key: str | None
) -> workflow_pb2.StartWorkflowRunRequest:
    """Bytes and str travel as they are, anything else as JSON; a key is generated when none is given."""
    if isinstance(run_input, bytes):
        data = run_input
    elif isinstance(run_input, str):
        data = run_input.encode()
    else:
        data = b"" if run_input is None else json.dumps(run_input).encode()
    return workflow_pb2.StartWorkflowRunRequest(
        workflow_name=name,
        workflow_version=version or 0,
        input=data,
        idempotency_key=idempotency_key or f"dispatchd-{uuid.uuid4()}",
    )


def run_status(status: WorkflowRunStatus | str | None) -> workflow_pb2.WorkflowRunStatus.ValueType:
    if status is None:
        return workflow_pb2.WorkflowRunStatus.ValueType(0)
    if isinstance(status, str):
        name = status.upper()
        status = WorkflowRunStatus[name if name != "CANCELLED" else "CANCELED"]
    return workflow_pb2.WorkflowRunStatus.ValueType(status)
