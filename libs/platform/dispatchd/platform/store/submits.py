"""Submitting jobs: many jobs and their first attempts in one set-based statement, idempotently.

Invariants: every job of a call is inserted by one statement in the caller's transaction,
each with its first execution (QUEUED); a job carrying an idempotency key whose scope (the
submitter's) already holds that key is not inserted again: the earlier job comes back
(`deduplicated`) when the request is the same, AlreadyExists otherwise, for that job only.
Jobs of one call behave as if submitted one after another, in order: the same key twice
returns the first one's job for the second (or AlreadyExists if the requests differ).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.errors import AlreadyExists
from dispatchd.platform.retry import RetryPolicy
from dispatchd.platform.states import ExecutionStatus, JobStatus
from dispatchd.platform.store.guards import value
from dispatchd.platform.store.rows import JobRow, QueuedRef


@dataclass(frozen=True, slots=True)
class NewJob:
    job_type: str
    payload: bytes
    priority: int
    idempotency_key: str | None
    metadata: dict[str, str]
    retry: RetryPolicy
    retry_policy_set: bool
    execution_timeout_ms: int | None = None
    # When the first attempt may run: at `run_at` (a past time means now), or `delay_ms`
    # after the insert (by the database clock). At most one is set.
    run_at: dt.datetime | None = None
    delay_ms: int | None = None
    # The authenticated subject submitting it (None without authentication). Idempotency keys
    # are unique per submitter, so one subject's key never meets another's job; all
    # unauthenticated submits share one scope.
    submitted_by: str | None = None
    # The W3C trace context of the submit's span (None: tracing off). Not part of the request
    # hash: a resubmit from another trace is the same request.
    trace_context: dict[str, str] | None = None

    def request_hash(self) -> bytes:
        """Fingerprint of everything the caller sent, to tell a resubmit from a conflict."""
        parts: list[object] = [
            self.job_type,
            self.payload.hex(),
            self.priority,
            sorted(self.metadata.items()),
            [self.retry.max_attempts, self.retry.initial_backoff_ms, self.retry.max_backoff_ms],
        ]
        if self.execution_timeout_ms is not None or self.run_at is not None or self.delay_ms is not None:
            # Only when used, so keys of jobs submitted without these fields keep their hash.
            run_at = self.run_at.isoformat() if self.run_at is not None else None
            parts.append([self.execution_timeout_ms, run_at, self.delay_ms])
        if self.submitted_by is not None:
            # Redundant since keys are scoped per submitter; kept so existing keys keep their hash.
            parts.append(["submitted_by", self.submitted_by])
        canonical = json.dumps(parts, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def scope(self) -> tuple[str | None, str] | None:
        """What its idempotency key is unique within (None: no key, never deduplicated)."""
        return None if self.idempotency_key is None else (self.submitted_by, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class Submitted:
    job: JobRow
    queued: QueuedRef | None  # None when an earlier job was returned
    deduplicated: bool


# What one job of a call came to: its job, or why it was refused (AlreadyExists).
Outcome = Submitted | AlreadyExists

# One row per job, from parallel arrays. Only what the answer needs comes back: the rest of
# the row is what the caller sent. One clock reading, so a run_at in the past is exactly the
# creation time.
_INSERT = f"""
WITH n AS (SELECT clock_timestamp() AS now), j AS (
    INSERT INTO jobs (job_id, job_type, payload, status, priority, idempotency_key, request_hash,
                      metadata, max_attempts, initial_backoff_ms, max_backoff_ms, retry_policy_set,
                      execution_timeout_ms, run_at, submitted_by, trace_context, created_at, updated_at)
    SELECT i.job_id, i.job_type, i.payload, {value(JobStatus.PENDING)}, i.priority, i.idempotency_key,
           i.request_hash, i.metadata, i.max_attempts, i.initial_backoff_ms, i.max_backoff_ms,
           i.retry_policy_set, i.execution_timeout_ms,
           CASE WHEN i.run_at IS NOT NULL THEN GREATEST(i.run_at, n.now)
                WHEN i.delay_ms IS NOT NULL THEN n.now + make_interval(secs => i.delay_ms::float8 / 1000)
           END, i.submitted_by, i.trace_context, n.now, n.now
    FROM n, unnest($1::uuid[], $2::text[], $3::bytea[], $4::int[], $5::text[], $6::bytea[], $7::jsonb[],
                   $8::int[], $9::int[], $10::int[], $11::bool[], $12::bigint[], $13::timestamptz[],
                   $14::bigint[], $15::text[], $16::jsonb[])
         AS i(job_id, job_type, payload, priority, idempotency_key, request_hash, metadata, max_attempts,
              initial_backoff_ms, max_backoff_ms, retry_policy_set, execution_timeout_ms, run_at, delay_ms,
              submitted_by, trace_context)
    ON CONFLICT (submitted_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING job_id, job_type, priority, created_at, run_at, attempts
), e AS (
    INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority, queued_at, available_at)
    SELECT gen_random_uuid(), j.job_id, 1, {value(ExecutionStatus.QUEUED)}, j.job_type, j.priority, j.created_at,
           GREATEST(j.created_at, j.run_at)
    FROM j
    RETURNING job_id, execution_id, available_at
)
SELECT j.job_id, j.created_at, j.run_at, j.attempts, e.execution_id, e.available_at FROM j JOIN e USING (job_id)
"""

# The key's scope is the submitter's; `IS NULL` rather than `IS NOT DISTINCT FROM`, which no
# index serves, for the shared scope of unauthenticated submits.
_BY_KEYS = "SELECT * FROM jobs WHERE idempotency_key = ANY($1::text[]) AND submitted_by = $2"
_BY_ANONYMOUS_KEYS = "SELECT * FROM jobs WHERE idempotency_key = ANY($1::text[]) AND submitted_by IS NULL"


def _order(new: NewJob) -> tuple[bool, str, str]:
    # Concurrent calls insert keys in one global order, so two of them waiting on each
    # other's uncommitted keys can never deadlock.
    return (new.submitted_by is not None, new.submitted_by or "", new.idempotency_key or "")


async def _insert(conn: asyncpg.Connection, news: Sequence[NewJob]) -> list[Submitted | None]:
    """Insert `news` (keys distinct within it): each one's job, or None where its key was taken."""
    ordered = sorted(news, key=_order)
    ids = [uuid.uuid4() for _ in ordered]
    rows = await conn.fetch(
        _INSERT,
        ids,
        [n.job_type for n in ordered],
        [n.payload for n in ordered],
        [n.priority for n in ordered],
        [n.idempotency_key for n in ordered],
        # Only a keyed job can ever be compared with a resubmit: hash nothing else.
        [n.request_hash() if n.idempotency_key else None for n in ordered],
        [n.metadata for n in ordered],
        [n.retry.max_attempts for n in ordered],
        [n.retry.initial_backoff_ms for n in ordered],
        [n.retry.max_backoff_ms for n in ordered],
        [n.retry_policy_set for n in ordered],
        [n.execution_timeout_ms for n in ordered],
        [n.run_at for n in ordered],
        [n.delay_ms for n in ordered],
        [n.submitted_by for n in ordered],
        [n.trace_context for n in ordered],
    )
    inserted = {r["job_id"]: r for r in rows}
    by_new = {id(n): _fresh(n, i, inserted[i]) for n, i in zip(ordered, ids, strict=True) if i in inserted}
    return [by_new.get(id(n)) for n in news]


def _fresh(new: NewJob, job_id: uuid.UUID, row: asyncpg.Record) -> Submitted:
    """The inserted job as the caller sent it, with what the database decided."""
    created: dt.datetime = row["created_at"]
    job = JobRow(
        job_id=job_id,
        job_type=new.job_type,
        payload=new.payload,
        status=JobStatus.PENDING,
        priority=new.priority,
        idempotency_key=new.idempotency_key,
        metadata=new.metadata,
        max_attempts=new.retry.max_attempts,
        initial_backoff_ms=new.retry.initial_backoff_ms,
        max_backoff_ms=new.retry.max_backoff_ms,
        retry_policy_set=new.retry_policy_set,
        attempts=row["attempts"],
        result=None,
        error_message="",
        created_at=created,
        updated_at=created,
        finished_at=None,
        execution_timeout_ms=new.execution_timeout_ms,
        run_at=row["run_at"],
        submitted_by=new.submitted_by,
    )
    return Submitted(job, QueuedRef(row["execution_id"], new.job_type, new.priority, row["available_at"]), False)


async def _existing(conn: asyncpg.Connection, news: Sequence[NewJob]) -> dict[tuple[str | None, str], asyncpg.Record]:
    """The jobs holding the keys of `news` (all keyed), by scope. ON CONFLICT waited for
    their inserts to commit, so they are visible."""
    by_submitter: dict[str | None, set[str]] = {}
    for new in news:
        assert new.idempotency_key is not None
        by_submitter.setdefault(new.submitted_by, set()).add(new.idempotency_key)
    found: dict[tuple[str | None, str], asyncpg.Record] = {}
    for submitter, keys in by_submitter.items():
        if submitter is None:
            rows = await conn.fetch(_BY_ANONYMOUS_KEYS, list(keys))
        else:
            rows = await conn.fetch(_BY_KEYS, list(keys), submitter)
        found.update(((submitter, r["idempotency_key"]), r) for r in rows)
    return found


def _resubmitted(new: NewJob, existing: asyncpg.Record) -> Outcome:
    if bytes(existing["request_hash"] or b"") != new.request_hash():
        return AlreadyExists(
            f"idempotency key {new.idempotency_key!r} is already used by job {existing['job_id']} "
            "with a different request"
        )
    return Submitted(JobRow.from_record(existing), None, deduplicated=True)


async def submit_all(conn: asyncpg.Connection, news: Sequence[NewJob]) -> list[Outcome]:
    """Submit `news` within the caller's transaction; one outcome per job, in order."""
    outcomes: dict[int, Outcome] = {}
    waiting = list(range(len(news)))
    while waiting:  # a second round only if a job holding a key was deleted in between
        # A key's first job in the call is inserted; the later ones meet it as a resubmit.
        first: dict[tuple[str | None, str], int] = {}
        inserting = [i for i in waiting if (scope := news[i].scope()) is None or first.setdefault(scope, i) == i]
        for i, submitted in zip(inserting, await _insert(conn, [news[i] for i in inserting]), strict=True):
            if submitted is not None:
                outcomes[i] = submitted
        taken = [i for i in waiting if i not in outcomes]
        existing = await _existing(conn, [news[i] for i in taken]) if taken else {}
        waiting = []
        for i in taken:
            holder = existing.get(_scope(news[i]))
            if holder is None:
                waiting.append(i)
            else:
                outcomes[i] = _resubmitted(news[i], holder)
    return [outcomes[i] for i in range(len(news))]


def _scope(new: NewJob) -> tuple[str | None, str]:
    scope = new.scope()
    assert scope is not None, "only a keyed job can meet a taken key"
    return scope


async def submit(conn: asyncpg.Connection | asyncpg.Pool, new: NewJob) -> Submitted:
    """Submit one job in its own transaction (a savepoint inside the caller's); AlreadyExists
    when its key holds another request."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            return await submit(acquired, new)
    async with conn.transaction():
        (outcome,) = await submit_all(conn, [new])
    if isinstance(outcome, AlreadyExists):
        raise outcome
    return outcome
