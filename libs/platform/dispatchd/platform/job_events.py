"""Job events on Redis, for live views (WatchJobs) and log followers: what they say, how they travel.

Two channels carry them, both best effort (Postgres stays the truth; a reader that may have
missed one re-reads it):
- the job channel (`Keys.job_channel`), one JSON object per terminal transition, as WaitJob
  has always read it: {"job_id", "status"}, plus "job_type", "kind" and "at" for watchers
  (a reader ignores keys it does not know, so old and new services mix);
- the activity channel (`Keys.job_activity_channel`), the other transitions — submitted,
  started, retrying, redriven — one message per batch that a service already sends to Redis
  in one pipeline: {"at": seconds, "events": [[job_id, job_type, kind, status, attempt], ...]}.
  So the hot paths add one PUBLISH per batch, never one per job.

`Kind` values are the wire values of `dispatchd.v1.JobEventKind` (a test keeps them equal).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dispatchd.platform.states import JobStatus
from dispatchd.platform.store.rows import Settlement


class Kind(enum.IntEnum):
    SUBMITTED = 1
    STARTED = 2
    RETRYING = 3
    SUCCEEDED = 4
    DEAD_LETTERED = 5
    CANCELED = 6
    REDRIVEN = 7


_TERMINAL_KIND = {JobStatus.SUCCEEDED: Kind.SUCCEEDED, JobStatus.FAILED: Kind.DEAD_LETTERED}


def terminal_kind(status: int) -> Kind:
    """The event kind of a terminal job status (a job fails only when its last attempt is dead-lettered)."""
    return _TERMINAL_KIND.get(JobStatus(status), Kind.CANCELED)


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    job_type: str
    kind: Kind
    status: int  # the job's status after the change (a JobStatus value)
    attempt: int = 0  # 0: not known to the publisher
    at: float = 0.0  # when it was published (Unix seconds)


def terminal_message(job_id: str, status: int, job_type: str) -> str:
    """A job-channel message: what WaitJob reads, and what a watcher needs besides."""
    fields = {"job_id": job_id, "status": status, "job_type": job_type, "kind": int(terminal_kind(status))}
    return json.dumps(fields | {"at": round(time.time(), 3)})


def activity_message(events: Iterable[JobEvent]) -> str | None:
    """One activity-channel message for a batch; None when the batch is empty."""
    rows = [[e.job_id, e.job_type, int(e.kind), int(e.status), e.attempt] for e in events]
    return json.dumps({"at": round(time.time(), 3), "events": rows}, separators=(",", ":")) if rows else None


def retries(settled: Iterable[Settlement]) -> list[JobEvent]:
    """The RETRYING events of applied settlements that queued another attempt."""
    return [
        JobEvent(str(s.job_id), s.job_type, Kind.RETRYING, int(s.job_status))
        for s in settled
        if s.applied and s.retry is not None and s.job_id is not None and s.job_status is not None
    ]


def parse_terminal(data: str) -> JobEvent:
    """A job-channel message; raises ValueError when it is not one."""
    try:
        fields: dict[str, Any] = json.loads(data)
        status = int(fields["status"])
        kind = Kind(int(fields["kind"])) if "kind" in fields else terminal_kind(status)
        return JobEvent(
            str(fields["job_id"]), str(fields.get("job_type", "")), kind, status, 0, float(fields.get("at", 0.0))
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a job event: {exc}") from None


def parse_activity(data: str) -> Sequence[JobEvent]:
    """An activity-channel message's events; raises ValueError when it is not one."""
    try:
        message: dict[str, Any] = json.loads(data)
        at = float(message["at"])
        return [
            JobEvent(str(job_id), str(job_type), Kind(int(kind)), int(status), int(attempt), at)
            for job_id, job_type, kind, status, attempt in message["events"]
        ]
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a job activity message: {exc}") from None
