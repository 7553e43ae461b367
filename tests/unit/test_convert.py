"""Store rows to API messages."""

from __future__ import annotations

import datetime as dt
import uuid

from dispatchd.control_plane import convert
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store.rows import ExecutionRow, JobRow
from dispatchd.v1 import common_pb2

T0 = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)


def job_row(**changes: object) -> JobRow:
    fields: dict[str, object] = {
        "job_id": uuid.UUID(int=1),
        "job_type": "email.send",
        "payload": b"\x01\x02",
        "status": JobStatus.SUCCEEDED,
        "priority": 5,
        "idempotency_key": None,
        "metadata": {"a": "b"},
        "max_attempts": 4,
        "initial_backoff_ms": 1500,
        "max_backoff_ms": 60_000,
        "retry_policy_set": True,
        "attempts": 2,
        "result": b"out",
        "error_message": "",
        "created_at": T0,
        "updated_at": T0 + dt.timedelta(seconds=1),
        "finished_at": T0 + dt.timedelta(seconds=2),
    }
    fields.update(changes)
    return JobRow(**fields)  # type: ignore[arg-type]


def test_job() -> None:
    job = convert.job(job_row())
    assert job.job_id == str(uuid.UUID(int=1))
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED
    assert job.payload == b"\x01\x02" and job.result == b"out"
    assert job.idempotency_key == "" and dict(job.metadata) == {"a": "b"}
    assert job.retry_policy.max_attempts == 4
    assert (job.retry_policy.initial_backoff.seconds, job.retry_policy.initial_backoff.nanos) == (1, 500_000_000)
    assert job.retry_policy.max_backoff.ToSeconds() == 60
    assert job.created_at.ToDatetime(tzinfo=dt.UTC) == T0
    assert job.finished_at.ToDatetime(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=2)
    assert job.attempts == 2
    assert job.workflow_run_id == ""  # submitted on its own


def test_a_workflow_steps_job_names_its_run() -> None:
    assert convert.job(job_row(workflow_run_id=uuid.UUID(int=7))).workflow_run_id == str(uuid.UUID(int=7))


def test_job_without_optional_parts() -> None:
    job = convert.job(job_row(result=None, finished_at=None, idempotency_key="k", status=JobStatus.PENDING))
    assert job.result == b"" and not job.HasField("finished_at")
    assert job.idempotency_key == "k" and job.status == common_pb2.JOB_STATUS_PENDING


def test_execution() -> None:
    row = ExecutionRow(
        execution_id=uuid.UUID(int=2),
        job_id=uuid.UUID(int=1),
        attempt=3,
        status=ExecutionStatus.CANCELED,
        job_type="email.send",
        priority=0,
        worker_id=None,
        error_message="cancelled",
        result=None,
        queued_at=T0,
        available_at=T0 + dt.timedelta(milliseconds=5),
        claimed_at=None,
        started_at=None,
        finished_at=T0,
    )
    execution = convert.execution(row)
    assert execution.status == common_pb2.EXECUTION_STATUS_CANCELED
    assert execution.worker_id == "" and execution.result == b"" and execution.attempt == 3
    assert not execution.HasField("claimed_at") and not execution.HasField("started_at")
    assert execution.available_at.ToDatetime(tzinfo=dt.UTC) == T0 + dt.timedelta(milliseconds=5)
