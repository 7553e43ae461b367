"""The job, execution and worker states, in one place for every service.

Values equal the protobuf enum numbers so they are stored as-is in Postgres. Every
transition in the store is a guarded UPDATE whose WHERE clause names the states it may
leave; the sets below are those guards, and the named guard sets are derived from the
transition tables, so the store cannot allow a move the tables do not. No store statement
spells a status number itself (`store.guards` renders these sets; a test enforces it).
"""

from __future__ import annotations

from enum import IntEnum


class JobStatus(IntEnum):
    PENDING = 1
    DISPATCHING = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELED = 6
    # A workflow step whose dependencies have not all succeeded: no attempt exists yet.
    WAITING = 7


class ExecutionStatus(IntEnum):
    QUEUED = 1
    CLAIMED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    DEAD_LETTERED = 6
    CANCELED = 7


class WorkerStatus(IntEnum):
    """A worker's last reported state; OFFLINE once its stream ended or its heartbeats stopped."""

    READY = 1
    BUSY = 2
    DRAINING = 3
    OFFLINE = 4


JOB_ACTIVE: frozenset[JobStatus] = frozenset(
    {JobStatus.PENDING, JobStatus.DISPATCHING, JobStatus.RUNNING, JobStatus.WAITING}
)
JOB_TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

EXECUTION_OWNED: frozenset[ExecutionStatus] = frozenset({ExecutionStatus.CLAIMED, ExecutionStatus.RUNNING})
EXECUTION_ACTIVE: frozenset[ExecutionStatus] = EXECUTION_OWNED | {ExecutionStatus.QUEUED}
EXECUTION_TERMINAL: frozenset[ExecutionStatus] = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.DEAD_LETTERED,
        ExecutionStatus.CANCELED,
    }
)

# Allowed transitions; the store's guards are derived from these so the two cannot drift.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.DISPATCHING, JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.DISPATCHING: frozenset(
        {JobStatus.RUNNING, JobStatus.PENDING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.PENDING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
    # A waiting step is cancelled with its run (or when a dependency failed), or fails when
    # its payload template cannot be resolved; it leaves for PENDING only by a release (below).
    JobStatus.WAITING: frozenset({JobStatus.CANCELED, JobStatus.FAILED}),
}

EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.QUEUED: frozenset({ExecutionStatus.CLAIMED, ExecutionStatus.CANCELED}),
    ExecutionStatus.CLAIMED: frozenset(
        {
            ExecutionStatus.RUNNING,
            ExecutionStatus.SUCCEEDED,
            ExecutionStatus.FAILED,
            ExecutionStatus.DEAD_LETTERED,
            ExecutionStatus.CANCELED,
        }
    ),
    ExecutionStatus.RUNNING: frozenset(
        {
            ExecutionStatus.SUCCEEDED,
            ExecutionStatus.FAILED,
            ExecutionStatus.DEAD_LETTERED,
            ExecutionStatus.CANCELED,
        }
    ),
    ExecutionStatus.SUCCEEDED: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.DEAD_LETTERED: frozenset(),
    ExecutionStatus.CANCELED: frozenset(),
}


# The one way out of a terminal state, and only by an operator: a FAILED job whose last
# attempt was dead-lettered is redriven back to PENDING with a new attempt. It is kept out
# of JOB_TRANSITIONS on purpose, so no settle guard can ever take that path by accident;
# SUCCEEDED and CANCELED are final without exception.
JOB_REDRIVE_SOURCE = JobStatus.FAILED
JOB_REDRIVE_TARGET = JobStatus.PENDING
REDRIVE_LAST_EXECUTION = ExecutionStatus.DEAD_LETTERED


# A workflow step's release: WAITING -> PENDING with its first attempt, in the transaction
# that records its last dependency's success. Kept out of JOB_TRANSITIONS like the redrive,
# so no retry guard (the sources of PENDING) ever matches a waiting job.
JOB_RELEASE_SOURCE = JobStatus.WAITING
JOB_RELEASE_TARGET = JobStatus.PENDING


class WorkflowRunStatus(IntEnum):
    """A workflow run's state; values equal `dispatchd.v1.WorkflowRunStatus`."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELED = 4


# FAILED -> RUNNING is the redrive of its failed step; SUCCEEDED and CANCELED are final.
WORKFLOW_RUN_TRANSITIONS: dict[WorkflowRunStatus, frozenset[WorkflowRunStatus]] = {
    WorkflowRunStatus.RUNNING: frozenset(
        {WorkflowRunStatus.SUCCEEDED, WorkflowRunStatus.FAILED, WorkflowRunStatus.CANCELED}
    ),
    WorkflowRunStatus.FAILED: frozenset({WorkflowRunStatus.RUNNING, WorkflowRunStatus.CANCELED}),
    WorkflowRunStatus.SUCCEEDED: frozenset(),
    WorkflowRunStatus.CANCELED: frozenset(),
}


def run_sources(target: WorkflowRunStatus) -> frozenset[WorkflowRunStatus]:
    """States a run may be in for a transition to `target`: the guard of that UPDATE."""
    return frozenset(s for s, targets in WORKFLOW_RUN_TRANSITIONS.items() if target in targets)


def job_sources(target: JobStatus) -> list[int]:
    """States a job may be in for a transition to `target`: the guard of that UPDATE."""
    return sorted(int(s) for s, targets in JOB_TRANSITIONS.items() if target in targets)


def execution_sources(target: ExecutionStatus) -> list[int]:
    """States an execution may be in for a transition to `target`."""
    return sorted(int(s) for s, targets in EXECUTION_TRANSITIONS.items() if target in targets)


def _job_sources(target: JobStatus) -> frozenset[JobStatus]:
    return frozenset(JobStatus(s) for s in job_sources(target))


def _execution_sources(target: ExecutionStatus) -> frozenset[ExecutionStatus]:
    return frozenset(ExecutionStatus(s) for s in execution_sources(target))


# The named guards, each read off the transition tables (a test pins them to the sets above).
# A queued execution may be claimed, and its job leaves PENDING for DISPATCHING with it.
EXECUTION_CLAIMABLE = _execution_sources(ExecutionStatus.CLAIMED)
JOB_CLAIMABLE = _job_sources(JobStatus.DISPATCHING)
# A claimed execution may start; its job follows to RUNNING.
EXECUTION_STARTABLE = _execution_sources(ExecutionStatus.RUNNING)
JOB_STARTABLE = _job_sources(JobStatus.RUNNING)
# An attempt may end (succeed, fail, be dead-lettered) only while a stream owns it.
EXECUTION_SETTLEABLE = (
    _execution_sources(ExecutionStatus.SUCCEEDED)
    & _execution_sources(ExecutionStatus.FAILED)
    & _execution_sources(ExecutionStatus.DEAD_LETTERED)
)
JOB_SUCCEEDABLE = _job_sources(JobStatus.SUCCEEDED)
JOB_FAILABLE = _job_sources(JobStatus.FAILED)
JOB_RETRYABLE = _job_sources(JobStatus.PENDING)
EXECUTION_CANCELLABLE = _execution_sources(ExecutionStatus.CANCELED)
JOB_CANCELLABLE = _job_sources(JobStatus.CANCELED)
