"""Schedules: define (upsert by name), read, list, pause, resume and delete them.

Invariants: a schedule's `cursor_at` only moves forward, except that whatever the schedule
was not running for is never caught up: a new schedule, a changed timing and a resume all
move the cursor to now (the catch-up policy covers the scheduler's downtime, not the
schedule's). `next_fire_at` is always the timing's first fire time after the cursor. Each
write is one transaction holding the schedule's row lock, the same lock the leader's fire
takes (store.fires), so a definition never changes under a fire half-way through.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from dispatchd.platform.catch_up import CatchUp, Overlap
from dispatchd.platform.errors import NotFound
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.store.submits import NewJob
from dispatchd.platform.timing import Timing

SOURCE_API = "api"
SOURCE_GITOPS = "gitops"


@dataclass(frozen=True, slots=True)
class WorkflowTarget:
    """A run of workflow `name` (`version` None: its latest version when the fire happens)."""

    name: str
    version: int | None
    input: bytes


@dataclass(frozen=True, slots=True)
class Definition:
    """Everything a caller defines about a schedule. It starts a job from the template `job`, or
    (`workflow` set) a workflow run; `job` then carries only who created the schedule."""

    name: str
    cron: str | None
    interval: dt.timedelta | None
    time_zone: str
    job: NewJob
    catch_up: CatchUp
    catch_up_limit: int
    overlap: Overlap
    paused: bool = False
    source: str = SOURCE_API
    workflow: WorkflowTarget | None = None

    def timing(self, anchor: dt.datetime) -> Timing:
        return Timing(cron=self.cron, time_zone=self.time_zone, interval=self.interval, anchor=anchor)

    def job_options(self) -> dict[str, Any]:
        job = self.job
        return {
            "priority": job.priority,
            "metadata": job.metadata,
            "max_attempts": job.retry.max_attempts,
            "initial_backoff_ms": job.retry.initial_backoff_ms,
            "max_backoff_ms": job.retry.max_backoff_ms,
            "retry_policy_set": job.retry_policy_set,
            "execution_timeout_ms": job.execution_timeout_ms,
        }

    def target_columns(self) -> list[object]:
        """job_type, payload, job_options, workflow_name, workflow_version, workflow_input."""
        if self.workflow is not None:
            w = self.workflow
            return [None, b"", {}, w.name, w.version, w.input]
        return [self.job.job_type, self.job.payload, self.job_options(), None, None, b""]

    def digest(self) -> bytes:
        """Fingerprint of the definition: a GitOps reload rewrites only what changed."""
        target = [v.hex() if isinstance(v, bytes) else v for v in self.target_columns()]
        parts = [self.cron, self.interval_ms, self.time_zone, target, int(self.catch_up), self.catch_up_limit,
                 int(self.overlap), self.paused]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()

    @property
    def interval_ms(self) -> int | None:
        return None if self.interval is None else int(self.interval.total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    schedule_id: uuid.UUID
    name: str
    definition: Definition
    anchor_at: dt.datetime
    cursor_at: dt.datetime
    next_fire_at: dt.datetime
    last_fire_at: dt.datetime | None
    last_job_id: uuid.UUID | None
    last_run_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # The latest fire's record (read by get and list only): when it was fired and its job.
    last_fired_at: dt.datetime | None = None
    last_fire_job_id: uuid.UUID | None = None
    last_fire_run_id: uuid.UUID | None = None
    last_fire_error: str = ""

    @property
    def timing(self) -> Timing:
        return self.definition.timing(self.anchor_at)

    @classmethod
    def from_record(cls, r: Any) -> ScheduleRow:
        options = r["job_options"] or {}
        job = NewJob(
            job_type=r["job_type"] or "",
            payload=bytes(r["payload"]),
            priority=options.get("priority", 0),
            idempotency_key=None,
            metadata=dict(options.get("metadata", {})),
            retry=RetryPolicy.from_parts(
                options.get("max_attempts"), options.get("initial_backoff_ms"), options.get("max_backoff_ms")
            ),
            retry_policy_set=options.get("retry_policy_set", False),
            execution_timeout_ms=options.get("execution_timeout_ms"),
            submitted_by=r["created_by"],
        )
        workflow = None
        if r["workflow_name"] is not None:
            workflow = WorkflowTarget(r["workflow_name"], r["workflow_version"], bytes(r["workflow_input"]))
        interval = None if r["interval_ms"] is None else dt.timedelta(milliseconds=r["interval_ms"])
        definition = Definition(
            name=r["name"], cron=r["cron"], interval=interval, time_zone=r["time_zone"], job=job,
            catch_up=CatchUp(r["catch_up"]), catch_up_limit=r["catch_up_limit"], overlap=Overlap(r["overlap"]),
            paused=r["paused"], source=r["source"], workflow=workflow,
        )
        return cls(
            schedule_id=r["schedule_id"], name=r["name"], definition=definition, anchor_at=r["anchor_at"],
            cursor_at=r["cursor_at"], next_fire_at=r["next_fire_at"], last_fire_at=r["last_fire_at"],
            last_job_id=r["last_job_id"], last_run_id=r["last_run_id"], created_at=r["created_at"],
            updated_at=r["updated_at"], last_fired_at=r.get("last_fired_at"),
            last_fire_job_id=r.get("last_fire_job_id"), last_fire_run_id=r.get("last_fire_run_id"),
            last_fire_error=r.get("last_fire_error") or "",
        )


_INSERT = """
INSERT INTO schedules (schedule_id, name, cron, interval_ms, time_zone, anchor_at, job_type, payload, job_options,
                       workflow_name, workflow_version, workflow_input, catch_up, catch_up_limit, overlap, paused,
                       cursor_at, next_fire_at, source, definition_hash, created_by, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $6, $17, $18, $19, $20, $6, $6)
RETURNING *
"""

_UPDATE = """
UPDATE schedules SET cron = $2, interval_ms = $3, time_zone = $4, anchor_at = $5, job_type = $6, payload = $7,
       job_options = $8, workflow_name = $9, workflow_version = $10, workflow_input = $11, catch_up = $12,
       catch_up_limit = $13, overlap = $14, paused = $15, cursor_at = $16, next_fire_at = $17, source = $18,
       definition_hash = $19, updated_at = $20
WHERE schedule_id = $1 RETURNING *
"""


async def _now(conn: asyncpg.Connection) -> dt.datetime:
    now: dt.datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def put(conn: asyncpg.Connection, d: Definition) -> tuple[ScheduleRow, bool]:
    """Create the schedule `d.name`, or replace its definition; returns it and whether it is new.

    Call inside a transaction. An unchanged definition is left alone (its cursor too).
    """
    existing = await conn.fetchrow("SELECT * FROM schedules WHERE name = $1 FOR UPDATE", d.name)
    now = await _now(conn)
    digest = d.digest()
    if existing is None:
        anchor = now
        row = await conn.fetchrow(
            _INSERT, uuid.uuid4(), d.name, d.cron, d.interval_ms, d.time_zone, anchor, *d.target_columns(),
            int(d.catch_up), d.catch_up_limit, int(d.overlap), d.paused,
            d.timing(anchor).next_after(anchor), d.source, digest, d.job.submitted_by,
        )
        return ScheduleRow.from_record(row), True
    old = ScheduleRow.from_record(existing)
    if bytes(existing["definition_hash"]) == digest:
        return old, False
    retimed = (old.definition.cron, old.definition.interval_ms, old.definition.time_zone) != (
        d.cron, d.interval_ms, d.time_zone)
    resumed = old.definition.paused and not d.paused
    anchor = now if retimed else old.anchor_at
    cursor = max(old.cursor_at, now) if (retimed or resumed) else old.cursor_at
    row = await conn.fetchrow(
        _UPDATE, old.schedule_id, d.cron, d.interval_ms, d.time_zone, anchor, *d.target_columns(), int(d.catch_up),
        d.catch_up_limit, int(d.overlap), d.paused, cursor,
        d.timing(anchor).next_after(cursor), d.source, digest, now,
    )
    return ScheduleRow.from_record(row), False


# A schedule with its latest fire's record (one primary-key lookup).
_READ = """
SELECT s.*, f.fired_at AS last_fired_at, f.job_id AS last_fire_job_id, f.run_id AS last_fire_run_id,
       f.error AS last_fire_error
FROM schedules s
LEFT JOIN schedule_fires f ON f.schedule_id = s.schedule_id AND f.fire_time = s.last_fire_at
"""


async def get(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> ScheduleRow:
    row = await conn.fetchrow(_READ + " WHERE s.name = $1", name)
    if row is None:
        raise NotFound(f"schedule {name!r} not found")
    return ScheduleRow.from_record(row)


async def list_schedules(
    conn: asyncpg.Connection | asyncpg.Pool, *, page_size: int, after: tuple[dt.datetime, uuid.UUID] | None
) -> list[ScheduleRow]:
    """Oldest first (keyset on created_at, schedule_id); up to `page_size` + 1 rows (the extra
    one says another page follows)."""
    at, last = after if after is not None else (None, None)
    rows = await conn.fetch(
        _READ + " WHERE $1::timestamptz IS NULL OR (s.created_at, s.schedule_id) > ($1, $2)"
        " ORDER BY s.created_at, s.schedule_id LIMIT $3",
        at, last, page_size + 1,
    )
    return [ScheduleRow.from_record(r) for r in rows]


async def names_from(conn: asyncpg.Connection | asyncpg.Pool, source: str) -> dict[str, bytes]:
    """Every schedule defined by `source`, with its definition's digest."""
    rows = await conn.fetch("SELECT name, definition_hash FROM schedules WHERE source = $1", source)
    return {r["name"]: bytes(r["definition_hash"]) for r in rows}


async def set_paused(pool: asyncpg.Pool, name: str, paused: bool) -> ScheduleRow:
    """Pause, or resume from now (the paused time is never caught up). Idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        row = ScheduleRow.from_record(await _locked(conn, name))
        if row.definition.paused == paused:
            return row
        now = await _now(conn)
        cursor = row.cursor_at if paused else max(row.cursor_at, now)
        updated = await conn.fetchrow(
            "UPDATE schedules SET paused = $2, cursor_at = $3, next_fire_at = $4, updated_at = $5"
            " WHERE schedule_id = $1 RETURNING *",
            row.schedule_id, paused, cursor, row.timing.next_after(cursor), now,
        )
        return ScheduleRow.from_record(updated)


async def _locked(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM schedules WHERE name = $1 FOR UPDATE", name)
    if row is None:
        raise NotFound(f"schedule {name!r} not found")
    return row


async def delete(conn: asyncpg.Connection | asyncpg.Pool, names: Sequence[str]) -> list[str]:
    """Delete these schedules and their fire records (their jobs stay); returns the names deleted."""
    rows = await conn.fetch("DELETE FROM schedules WHERE name = ANY($1::text[]) RETURNING name", list(names))
    return [r["name"] for r in rows]


@dataclass(frozen=True, slots=True)
class FireRow:
    fire_time: dt.datetime
    fired_at: dt.datetime | None
    job_id: uuid.UUID | None  # job, run and error all empty: the overlap policy skipped it
    run_id: uuid.UUID | None
    epoch: int | None
    error: str = ""


async def list_fires(
    conn: asyncpg.Connection | asyncpg.Pool, schedule_id: uuid.UUID, *, page_size: int, before: dt.datetime | None
) -> list[FireRow]:
    """Newest first; up to `page_size` + 1 rows (the extra one says another page follows)."""
    rows = await conn.fetch(
        "SELECT fire_time, fired_at, job_id, run_id, epoch, error FROM schedule_fires WHERE schedule_id = $1"
        " AND ($2::timestamptz IS NULL OR fire_time < $2) ORDER BY fire_time DESC LIMIT $3",
        schedule_id, before, page_size + 1,
    )
    return [FireRow(r["fire_time"], r["fired_at"], r["job_id"], r["run_id"], r["epoch"], r["error"]) for r in rows]
