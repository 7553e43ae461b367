"""Workflow definitions and runs: register a version, start a run, read runs.

Invariants: a definition version is immutable, and (name, version) numbers grow by one
per changed registration (an unchanged one returns the latest version). Starting a run
inserts the run, every step's job and the root steps' first executions in the caller's
transaction, so a run is never half-created; steps with dependencies are WAITING jobs
without an attempt until `store.workflow_progress` releases them. A run keeps the version
it started with. Idempotency keys are scoped per submitter, as for jobs.

`start_run` is the API other parts use (e.g. a schedule firing a workflow): call it inside
a transaction, then push `StartedRun.queued` to the ready queues after the commit (if
that push is lost, the scheduler's reconcile pass queues them).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from dispatchd.platform.errors import AlreadyExists, InvalidArgument, NotFound
from dispatchd.platform.states import ExecutionStatus, JobStatus, WorkflowRunStatus
from dispatchd.platform.store.guards import value
from dispatchd.platform.store.rows import QueuedRef
from dispatchd.platform.workflow_definitions import Definition, parse
from dispatchd.platform.workflow_templates import TemplateError, decode, references, resolve


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    definition: Definition
    version: int
    source: str
    created_at: Any


@dataclass(frozen=True, slots=True)
class StartedRun:
    run_id: uuid.UUID
    deduplicated: bool
    # The root steps' first executions, to push after the commit (empty when deduplicated).
    queued: list[QueuedRef]


def _stored(r: asyncpg.Record) -> StoredDefinition:
    return StoredDefinition(parse(r["definition"]), r["version"], r["source"], r["created_at"])


async def register(conn: asyncpg.Connection, definition: Definition, source: str) -> tuple[StoredDefinition, bool]:
    """Store `definition` as the next version of its name unless the latest equals it; whether it was new."""
    async with conn.transaction():
        # One registration per name at a time: versions are numbered without gaps or races.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dispatchd.workflow:' || $1))", definition.name)
        latest = await conn.fetchrow(
            "SELECT * FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1", definition.name
        )
        digest = definition.digest()
        if latest is not None and bytes(latest["digest"]) == digest:
            return _stored(latest), False
        row = await conn.fetchrow(
            "INSERT INTO workflow_definitions (name, version, definition, digest, source)"
            " VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING *",
            definition.name,
            1 if latest is None else latest["version"] + 1,
            definition.canonical(),
            digest,
            source,
        )
        return _stored(row), True


async def list_definitions(conn: asyncpg.Connection | asyncpg.Pool, name: str | None) -> list[StoredDefinition]:
    """Every version of `name` (newest first), or the latest version of every name."""
    if name:
        rows = await conn.fetch("SELECT * FROM workflow_definitions WHERE name = $1 ORDER BY version DESC", name)
    else:
        rows = await conn.fetch("SELECT DISTINCT ON (name) * FROM workflow_definitions ORDER BY name, version DESC")
    return [_stored(r) for r in rows]


async def get_definition(conn: asyncpg.Connection | asyncpg.Pool, name: str, version: int | None) -> StoredDefinition:
    if version:
        row = await conn.fetchrow("SELECT * FROM workflow_definitions WHERE name = $1 AND version = $2", name, version)
    else:
        row = await conn.fetchrow(
            "SELECT * FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1", name
        )
    if row is None:
        raise NotFound(f"workflow {name!r}" + (f" version {version}" if version else "") + " not found")
    return _stored(row)


def _request_hash(name: str, version: int | None, run_input: bytes) -> bytes:
    return hashlib.sha256(json.dumps([name, version, run_input.hex()]).encode()).digest()


_INSERT_RUN = f"""
INSERT INTO workflow_runs (run_id, workflow_name, workflow_version, status, input, idempotency_key,
                           request_hash, submitted_by)
VALUES ($1, $2, $3, {value(WorkflowRunStatus.RUNNING)}, $4, $5, $6, $7)
ON CONFLICT (submitted_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING run_id
"""

# Every step's job at once; a root (`due`) gets its first execution, the others wait.
_INSERT_STEPS = f"""
WITH n AS (SELECT clock_timestamp() AS now), j AS (
    INSERT INTO jobs (job_id, job_type, payload, status, priority, metadata, max_attempts, initial_backoff_ms,
                      max_backoff_ms, retry_policy_set, execution_timeout_ms, submitted_by, workflow_run_id,
                      created_at, updated_at)
    SELECT i.job_id, i.job_type, i.payload,
           CASE WHEN i.due THEN {value(JobStatus.PENDING)} ELSE {value(JobStatus.WAITING)} END,
           i.priority, i.metadata, i.max_attempts, i.initial_backoff_ms, i.max_backoff_ms, i.retry_policy_set,
           i.execution_timeout_ms, $13, $14, n.now, n.now
    FROM n, unnest($1::uuid[], $2::text[], $3::bytea[], $4::bool[], $5::int[], $6::jsonb[], $7::int[], $8::int[],
                   $9::int[], $10::bool[], $11::bigint[])
         AS i(job_id, job_type, payload, due, priority, metadata, max_attempts, initial_backoff_ms, max_backoff_ms,
              retry_policy_set, execution_timeout_ms)
    RETURNING job_id, job_type, priority, created_at
), s AS (
    INSERT INTO workflow_steps (run_id, step_id, position, job_id, depends_on, continue_on_failure,
                                payload_template, released_at)
    SELECT $14, i.step_id, i.position, i.job_id, ARRAY(SELECT jsonb_array_elements_text(i.depends_on)),
           i.continue_on_failure, i.template, CASE WHEN i.due THEN n.now END
    FROM n, unnest($1::uuid[], $12::jsonb[], $4::bool[]) WITH ORDINALITY AS t(job_id, spec, due, position)
         CROSS JOIN LATERAL (SELECT t.job_id, t.due, t.position, t.spec->>'id' AS step_id,
                                    t.spec->'depends_on' AS depends_on,
                                    (t.spec->>'continue_on_failure')::bool AS continue_on_failure,
                                    t.spec->'payload' AS template) i
), e AS (
    INSERT INTO executions (execution_id, job_id, attempt, status, job_type, priority, queued_at, available_at)
    SELECT gen_random_uuid(), j.job_id, 1, {value(ExecutionStatus.QUEUED)}, j.job_type, j.priority,
           j.created_at, j.created_at
    FROM j JOIN unnest($1::uuid[], $4::bool[]) AS d(job_id, due) ON d.job_id = j.job_id AND d.due
    RETURNING execution_id, job_type, priority, available_at
)
SELECT execution_id, job_type, priority, available_at FROM e
"""


def _run_input(definition: Definition, run_input: bytes) -> Any:
    """The input as templates read it; InvalidArgument when a template reads an input that is not JSON."""
    reads_input = any(r.startswith("input") for s in definition.steps for r in references(s.payload))
    try:
        return decode(run_input)
    except TemplateError:
        if reads_input:
            raise InvalidArgument("input must be JSON (or UTF-8 text): a step's payload reads it") from None
        return None


async def start_run(
    conn: asyncpg.Connection,
    *,
    name: str,
    version: int | None,
    run_input: bytes,
    idempotency_key: str | None,
    submitted_by: str | None,
) -> StartedRun:
    """Start a run of workflow `name` (its latest version when `version` is None) in the caller's
    transaction. With an idempotency key already used by this submitter, the earlier run comes
    back (`deduplicated`), or AlreadyExists when it was started with another request."""
    stored = await get_definition(conn, name, version)
    request_hash = _request_hash(name, version, run_input)
    run_id = uuid.uuid4()
    inserted = await conn.fetchval(
        _INSERT_RUN, run_id, name, stored.version, run_input, idempotency_key, request_hash, submitted_by
    )
    if inserted is None:
        existing = await conn.fetchrow(
            "SELECT run_id, request_hash FROM workflow_runs WHERE idempotency_key = $1"
            " AND submitted_by IS NOT DISTINCT FROM $2",
            idempotency_key,
            submitted_by,
        )
        assert existing is not None  # ON CONFLICT waited for it to commit
        if bytes(existing["request_hash"]) != request_hash:
            raise AlreadyExists(
                f"idempotency key {idempotency_key!r} is already used by run {existing['run_id']}"
                " with a different request"
            )
        return StartedRun(existing["run_id"], True, [])
    decoded_input = _run_input(stored.definition, run_input)
    steps = stored.definition.steps
    payloads: list[bytes] = []
    for step in steps:
        if step.depends_on:
            payloads.append(b"")  # resolved when released
            continue
        try:
            payloads.append(json.dumps(resolve(step.payload, decoded_input, {})).encode())
        except TemplateError as exc:
            raise InvalidArgument(f"step {step.id!r}: {exc}") from None
    rows = await conn.fetch(
        _INSERT_STEPS,
        [uuid.uuid4() for _ in steps],
        [s.job_type for s in steps],
        payloads,
        [not s.depends_on for s in steps],
        [s.priority for s in steps],
        [dict(s.metadata) for s in steps],
        [s.retry.max_attempts for s in steps],
        [s.retry.initial_backoff_ms for s in steps],
        [s.retry.max_backoff_ms for s in steps],
        [s.retry_policy_set for s in steps],
        [s.execution_timeout_ms for s in steps],
        [s.canonical() for s in steps],
        submitted_by,
        run_id,
    )
    queued = [QueuedRef(r["execution_id"], r["job_type"], r["priority"], r["available_at"]) for r in rows]
    return StartedRun(run_id, False, queued)
