"""Observe rows (logs, workers, queues, leadership, job events) to API messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd.control_plane.convert import timestamp
from dispatchd.platform.job_events import JobEvent
from dispatchd.platform.store.logs import LogRow
from dispatchd.platform.store.overview import QueueRow, WorkerRow
from dispatchd.v1 import observe_pb2

__all__ = ["job_event", "leadership", "log_line", "queue_stats", "timestamp", "worker"]


def _duration(delta: dt.timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(max(delta, dt.timedelta(0)))
    return d


def log_line(r: LogRow) -> observe_pb2.LogLine:
    return observe_pb2.LogLine(
        log_id=r.log_id,
        execution_id=str(r.execution_id),
        attempt=r.attempt,
        stream=r.stream,
        message=r.message,
        emitted_at=timestamp(r.emitted_at),
    )


def worker(r: WorkerRow) -> observe_pb2.WorkerInfo:
    return observe_pb2.WorkerInfo(
        worker_id=r.worker_id,
        capabilities=r.capabilities,
        max_concurrency=r.max_concurrency,
        in_flight=r.in_flight,
        status=r.status,  # type: ignore[arg-type]  # the store's WorkerStatus values are the wire values
        last_heartbeat_at=timestamp(r.last_heartbeat_at),
        connected_at=timestamp(r.connected_at),
        gateway_id=r.gateway_id or "",
        labels={str(k): str(v) for k, v in r.labels.items()},
    )


def queue_stats(r: QueueRow, as_of: dt.datetime) -> observe_pb2.QueueStats:
    due = r.oldest_due_at
    return observe_pb2.QueueStats(
        job_type=r.job_type,
        depth=r.depth,
        oldest_due_at=timestamp(due),
        oldest_due_age=None if due is None else _duration(as_of - due),
        delayed=r.delayed,
        running=r.running,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def leadership(holder: Any, remaining_ms: int, epoch: int) -> observe_pb2.SchedulerLeadership:
    """From the lease key's value and PTTL (negative: no lease) and the recorded fence epoch."""
    held = holder is not None and remaining_ms >= 0
    return observe_pb2.SchedulerLeadership(
        held=held,
        leader_id=_text(holder) if held else "",
        epoch=epoch,
        lease_remaining=_duration(dt.timedelta(milliseconds=remaining_ms)) if held else None,
    )


def job_event(e: JobEvent) -> observe_pb2.JobEvent:
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(int(e.at * 1e9))
    return observe_pb2.JobEvent(
        job_id=e.job_id,
        job_type=e.job_type,
        kind=int(e.kind),  # type: ignore[arg-type]  # job_events.Kind values are the wire values
        status=e.status,  # type: ignore[arg-type]
        attempt=e.attempt,
        at=at if e.at else None,
    )
