"""Workflow messages to and from the store's terms.

Invariant: a WorkflowDefinition message becomes the same document a YAML file holds
(`workflow_definitions` keys), so both go through one validation (`workflow_definitions.parse`);
nothing here decides whether a definition is valid, except that a payload template must be JSON.
"""

from __future__ import annotations

import json
from typing import Any

from dispatchd.control_plane.convert import duration, timestamp
from dispatchd.control_plane.validation import duration_ms
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.store.workflow_runs import RunRow, StepRow
from dispatchd.platform.store.workflows import StoredDefinition
from dispatchd.v1 import common_pb2, workflow_pb2


def _retry(step: workflow_pb2.WorkflowStep) -> dict[str, int] | None:
    if not step.HasField("retry_policy"):
        return None
    policy = step.retry_policy
    retry = {"max_attempts": policy.max_attempts} if policy.max_attempts else {}
    if policy.HasField("initial_backoff"):
        retry["initial_backoff_ms"] = duration_ms(policy.initial_backoff, f"step {step.id!r}: initial_backoff")
    if policy.HasField("max_backoff"):
        retry["max_backoff_ms"] = duration_ms(policy.max_backoff, f"step {step.id!r}: max_backoff")
    return retry


def step_document(step: workflow_pb2.WorkflowStep) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": step.id,
        "job_type": step.job_type,
        "depends_on": list(step.depends_on),
        "continue_on_failure": step.continue_on_failure,
        "priority": step.priority,
        "metadata": dict(step.metadata),
    }
    if step.payload_template_json:
        try:
            doc["payload"] = json.loads(step.payload_template_json)
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"step {step.id!r}: payload_template_json is not JSON ({exc})") from None
    retry = _retry(step)
    if retry is not None:
        doc["retry"] = retry
    if step.HasField("execution_timeout"):
        doc["execution_timeout_ms"] = duration_ms(step.execution_timeout, f"step {step.id!r}: execution_timeout")
    return doc


def document(message: workflow_pb2.WorkflowDefinition) -> dict[str, Any]:
    """The definition document of a RegisterWorkflow request (its version and source are ignored)."""
    return {"name": message.name, "steps": [step_document(s) for s in message.steps]}


def definition(stored: StoredDefinition) -> workflow_pb2.WorkflowDefinition:
    steps = []
    for spec in stored.definition.steps:
        steps.append(
            workflow_pb2.WorkflowStep(
                id=spec.id,
                job_type=spec.job_type,
                payload_template_json=json.dumps(spec.payload),
                depends_on=list(spec.depends_on),
                continue_on_failure=spec.continue_on_failure,
                retry_policy=common_pb2.RetryPolicy(
                    max_attempts=spec.retry.max_attempts,
                    initial_backoff=duration(spec.retry.initial_backoff_ms),
                    max_backoff=duration(spec.retry.max_backoff_ms),
                ),
                execution_timeout=duration(spec.execution_timeout_ms) if spec.execution_timeout_ms else None,
                priority=spec.priority,
                metadata=dict(spec.metadata),
            )
        )
    return workflow_pb2.WorkflowDefinition(
        name=stored.definition.name,
        version=stored.version,
        steps=steps,
        source=stored.source,
        created_at=timestamp(stored.created_at),
    )


def _step(row: StepRow) -> workflow_pb2.WorkflowRunStep:
    return workflow_pb2.WorkflowRunStep(
        step_id=row.step_id,
        job_id=str(row.job_id),
        status=common_pb2.JobStatus.ValueType(int(row.status)),
        attempts=row.attempts,
        depends_on=row.depends_on,
        created_at=timestamp(row.created_at),
        released_at=timestamp(row.released_at),
        finished_at=timestamp(row.finished_at),
        error_message=row.error_message,
        result=row.result or b"",
        job_type=row.job_type,
    )


def run(row: RunRow) -> workflow_pb2.WorkflowRun:
    return workflow_pb2.WorkflowRun(
        run_id=str(row.run_id),
        workflow_name=row.workflow_name,
        workflow_version=row.workflow_version,
        status=workflow_pb2.WorkflowRunStatus.ValueType(int(row.status)),
        input=row.input,
        idempotency_key=row.idempotency_key or "",
        error_message=row.error_message,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        finished_at=timestamp(row.finished_at),
        steps=[_step(s) for s in row.steps],
    )
