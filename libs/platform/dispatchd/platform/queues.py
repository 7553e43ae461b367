"""Redis side of dispatch: ready queues per job type, event channels, key names.

Postgres decides; Redis only says where to look. A ready queue is a sorted set of
execution ids per job type; the lowest score is popped first. Losing Redis loses nothing:
the scheduler re-queues every due QUEUED execution from Postgres (ZADD NX keeps existing
entries as they are).

The priority rule, with aging (`priority_aging_seconds` = A, default 10 s):

    score = due_time_ms - priority * A_ms

Higher priority first; FIFO within a priority (an older due time scores lower); and an
execution's effective priority rises by 1 for every A seconds it has waited since it
became due, so a low priority is never starved forever: priority 0 waiting 10 * A
seconds ties with priority 10 arriving now, and goes before any priority-10 work that
arrives later. The score is fixed at push time, so aging costs nothing at pop. With A = 0
priorities are strict (a higher one always goes first, and may starve lower ones).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from dispatchd.platform import job_events
from dispatchd.platform.job_events import JobEvent
from dispatchd.platform.store.rows import QueuedRef

MAX_PRIORITY = 1000
DEFAULT_AGING_SECONDS = 10.0
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01: keeps scores well inside a double's 53 bits
_PRIORITY_STRIDE = 2**41  # ~69 years of milliseconds


def score(priority: int, available_at: dt.datetime, aging_seconds: float = DEFAULT_AGING_SECONDS) -> float:
    """Ready-queue score (lowest pops first); see the module docstring for the rule."""
    ms = int(available_at.timestamp() * 1000) - _EPOCH_MS
    if aging_seconds <= 0:
        return float((MAX_PRIORITY - priority) * _PRIORITY_STRIDE + max(ms, 0))
    return float(ms - priority * round(aging_seconds * 1000))


# Pop up to ARGV[1] members across KEYS, always the lowest score among the queue heads.
_POP_BEST = """
local n = tonumber(ARGV[1])
local heads = {}
for i, key in ipairs(KEYS) do
  local h = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if h[1] then heads[i] = {h[1], tonumber(h[2])} end
end
local out = {}
while #out < n do
  local best = nil
  for i, h in pairs(heads) do
    if best == nil or h[2] < heads[best][2] then best = i end
  end
  if best == nil then break end
  redis.call('ZREM', KEYS[best], heads[best][1])
  out[#out + 1] = heads[best][1]
  local h = redis.call('ZRANGE', KEYS[best], 0, 0, 'WITHSCORES')
  if h[1] then heads[best] = {h[1], tonumber(h[2])} else heads[best] = nil end
end
return out
"""


class Keys:
    """Every Redis key and channel name of one deployment, made once from its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.job_types = f"{prefix}:job-types"
        self.ready_channel = f"{prefix}:events:ready"
        self.cancel_channel = f"{prefix}:events:cancel"
        self.job_channel = f"{prefix}:events:job"
        # Non-terminal job events, one message per batch (see job_events), and log notices.
        self.job_activity_channel = f"{prefix}:events:job-activity"
        self.log_channel = f"{prefix}:events:logs"
        self.scheduler_channel = f"{prefix}:events:scheduler"
        self.leader = f"{prefix}:scheduler:leader"

    def ready(self, job_type: str) -> str:
        return f"{self.prefix}:ready:{job_type}"


class ReadyQueues:
    def __init__(self, client: aioredis.Redis, prefix: str, *, aging_seconds: float = DEFAULT_AGING_SECONDS) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.aging_seconds = aging_seconds
        self._pop = client.register_script(_POP_BEST)

    async def push(self, refs: Iterable[QueuedRef], *, notify: bool = True) -> int:
        """Put executions on their ready queues and wake the gateways. Returns how many were new."""
        pipe = self.client.pipeline(transaction=False)
        queued = self.stage_push(pipe, refs, notify=notify)
        if not queued:
            return 0
        results = await pipe.execute()
        return sum(int(r) for r in results[:queued])

    def stage_push(self, pipe: Pipeline, refs: Iterable[QueuedRef], *, notify: bool = True) -> int:
        """Add `push`'s commands to `pipe`; returns how many ZADDs lead them (their replies count the new ids)."""
        by_type: dict[str, dict[str, float]] = {}
        for ref in refs:
            by_type.setdefault(ref.job_type, {})[str(ref.execution_id)] = score(
                ref.priority, ref.available_at, self.aging_seconds
            )
        if not by_type:
            return 0
        for job_type, members in by_type.items():
            pipe.zadd(self.keys.ready(job_type), members, nx=True)
        pipe.sadd(self.keys.job_types, *by_type)
        if notify:
            for job_type in by_type:
                pipe.publish(self.keys.ready_channel, job_type)
        return len(by_type)

    async def pop(self, job_types: Sequence[str], count: int) -> list[str]:
        """Take up to `count` execution ids, best first, from the queues of these job types."""
        if not job_types or count <= 0:
            return []
        members: list[Any] = await self._pop(keys=[self.keys.ready(t) for t in job_types], args=[count])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def known_job_types(self) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else str(m) for m in await self.client.smembers(self.keys.job_types)}

    async def contains(self, ref: QueuedRef) -> bool:
        return await self.client.zscore(self.keys.ready(ref.job_type), str(ref.execution_id)) is not None

    async def publish_cancel(self, execution_id: str, worker_id: str, reason: str) -> None:
        message = json.dumps({"execution_id": execution_id, "worker_id": worker_id, "reason": reason})
        await self.client.publish(self.keys.cancel_channel, message)

    async def enqueue(self, refs: Iterable[QueuedRef], activity: Iterable[JobEvent] = ()) -> None:
        """Queue what is due now; announce the earliest later one to the scheduler's timer,
        which queues it when it becomes due (the one way new attempts enter Redis). The
        `activity` events go first, so a watcher hears of a job before a worker can start it."""
        pipe = self.client.pipeline(transaction=False)
        self.stage_job_activity(pipe, activity)
        self.stage_enqueue(pipe, refs)
        await pipe.execute()

    def stage_enqueue(self, pipe: Pipeline, refs: Iterable[QueuedRef]) -> None:
        """Add `enqueue`'s commands to `pipe`."""
        now = dt.datetime.now(dt.UTC)
        due: list[QueuedRef] = []
        later: list[QueuedRef] = []
        for ref in refs:
            (due if ref.available_at <= now else later).append(ref)
        self.stage_push(pipe, due)
        if later:
            pipe.publish(self.keys.scheduler_channel, _due_message(min(r.available_at for r in later)))

    async def publish_due(self, due: dt.datetime) -> None:
        """Tell the scheduler leader something is due at `due` (a delayed attempt, a deadline)."""
        await self.client.publish(self.keys.scheduler_channel, _due_message(due))

    async def publish_job_event(self, job_id: str, status: int, job_type: str = "") -> None:
        """A job became terminal (WaitJob wakes on it; watchers see it)."""
        await self.client.publish(self.keys.job_channel, job_events.terminal_message(job_id, status, job_type))

    def stage_job_event(self, pipe: Pipeline, job_id: str, status: int, job_type: str = "") -> None:
        pipe.publish(self.keys.job_channel, job_events.terminal_message(job_id, status, job_type))

    def stage_job_activity(self, pipe: Pipeline, events: Iterable[JobEvent]) -> None:
        """One message for the batch's non-terminal job events (none when there are none)."""
        message = job_events.activity_message(events)
        if message is not None:
            pipe.publish(self.keys.job_activity_channel, message)

    async def publish_log_notice(self, execution_ids: Iterable[str]) -> None:
        """Log lines of these executions were stored (one notice per batch; see FollowLogs)."""
        await self.client.publish(self.keys.log_channel, json.dumps(sorted(execution_ids)))


def _due_message(due: dt.datetime) -> str:
    return f"{due.timestamp():.3f}"
