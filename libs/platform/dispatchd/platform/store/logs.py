"""Reading execution logs (written by the gateway: store.workers.append_log), by keyset on log_id.

Invariant: a read returns lines in storage order within an attempt and attempts in order,
and the position after a page is the last line's log_id, so a later read "after" it misses
no line committed by then. That one number serves a whole job because log ids grow across
attempts: an attempt stores lines only while it owns its execution, and the next attempt is
queued only after that ended. Each page is bounded: per execution an index range scan of at
most `limit` lines on (execution_id, log_id), whatever the log's length; and at most
PAGE_BYTES of text, so a page always fits in one gRPC message.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from dispatchd.platform.errors import NotFound
from dispatchd.platform.states import EXECUTION_TERMINAL, JOB_TERMINAL
from dispatchd.platform.store.guards import one_of


@dataclass(frozen=True, slots=True)
class LogTarget:
    """What a read covers: one execution, or (execution_id None) every attempt of a job."""

    job_id: uuid.UUID
    execution_id: uuid.UUID | None
    submitted_by: str | None  # the job's submitter, for the owner check


@dataclass(frozen=True, slots=True)
class LogRow:
    log_id: int
    execution_id: uuid.UUID
    attempt: int
    stream: str
    message: str
    emitted_at: dt.datetime


def _page(which: str) -> str:
    return f"""
SELECT l.log_id, l.execution_id, e.attempt, l.stream, l.message, l.emitted_at
FROM executions e CROSS JOIN LATERAL (
    SELECT log_id, execution_id, stream, message, emitted_at FROM execution_logs
    WHERE execution_id = e.execution_id AND log_id > $2 ORDER BY log_id LIMIT $3
) l
WHERE e.{which} = $1
ORDER BY e.attempt, l.log_id LIMIT $3
"""


# What one page may carry, so a reply stays well under gRPC's 4 MiB message limit however
# large the chunks (the gateway accepts up to DISPATCHD_MAX_PAYLOAD_BYTES each).
PAGE_BYTES = 1 << 20
_PAGE_OF_JOB = _page("job_id")
_PAGE_OF_EXECUTION = _page("execution_id")
_JOB = "SELECT job_id, submitted_by FROM jobs WHERE job_id = $1"
_EXECUTION = """
SELECT e.job_id, j.submitted_by FROM executions e JOIN jobs j ON j.job_id = e.job_id WHERE e.execution_id = $1
"""
_JOB_STATE = f"""
SELECT {one_of("status", JOB_TERMINAL)} AS done,
       ARRAY(SELECT execution_id FROM executions WHERE job_id = $1 ORDER BY attempt) AS executions
FROM jobs WHERE job_id = $1
"""
_EXECUTION_STATE = f"""
SELECT {one_of("status", EXECUTION_TERMINAL)} AS done, ARRAY[execution_id] AS executions
FROM executions WHERE execution_id = $1
"""


async def target(
    conn: asyncpg.Connection | asyncpg.Pool, *, job_id: uuid.UUID | None, execution_id: uuid.UUID | None
) -> LogTarget:
    """The job or the execution named (exactly one of them); NotFound when it does not exist."""
    if execution_id is not None:
        row = await conn.fetchrow(_EXECUTION, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        return LogTarget(row["job_id"], execution_id, row["submitted_by"])
    row = await conn.fetchrow(_JOB, job_id)
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return LogTarget(row["job_id"], None, row["submitted_by"])


async def page(
    conn: asyncpg.Connection | asyncpg.Pool, of: LogTarget, after: int, limit: int
) -> tuple[list[LogRow], bool]:
    """Up to `limit` lines after log id `after`, in order (see the module docstring), at most
    PAGE_BYTES of them (at least one); and whether more may follow (the page is full)."""
    if of.execution_id is not None:
        rows = await conn.fetch(_PAGE_OF_EXECUTION, of.execution_id, after, limit)
    else:
        rows = await conn.fetch(_PAGE_OF_JOB, of.job_id, after, limit)
    lines: list[LogRow] = []
    size = 0
    for r in rows:
        size += len(r["message"].encode())
        if lines and size > PAGE_BYTES:
            return lines, True
        lines.append(LogRow(**dict(r)))
    return lines, len(rows) == limit


async def state(conn: asyncpg.Connection | asyncpg.Pool, of: LogTarget) -> tuple[bool, list[uuid.UUID]]:
    """Whether the execution (or the job) is terminal, so that it stores no more lines (until
    a redrive, for a job); and the executions whose lines the read covers, first attempt first."""
    if of.execution_id is not None:
        row = await conn.fetchrow(_EXECUTION_STATE, of.execution_id)
    else:
        row = await conn.fetchrow(_JOB_STATE, of.job_id)
    if row is None:  # deleted meanwhile: nothing more will come
        return True, []
    return bool(row["done"]), list(row["executions"])
