"""Leader election over a Redis lease, so exactly one scheduler replica repairs at a time.

`LeaderLease` is the lease itself: a key holding the holder's random token with a TTL.
Only the holder's token may extend or delete it (compare-and-set Lua scripts), and every
successful acquire increments `{key}:epoch`: a fencing number that grows with each new
term, so writes of a deposed leader can later be refused by whoever checks it.

`Campaign` keeps a replica in the race: a standby tries to acquire every ttl/4 (or the
moment the current lease runs out, whichever is sooner); the leader renews every ttl/3.
The leader runs its work as a task and cancels it *before* its lease could have expired
if it cannot prove it still holds it — a failed renew, or Redis errors for too long.
On shutdown the lease is released so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from dispatchd.scheduler import metrics

log = logging.getLogger("dispatchd.scheduler.leader")

# Take the lease if it is free (or still ours after a step-down) and open a new term.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Raise the epoch counter to at least ARGV[1] (after Redis lost it, see store.fence).
_RAISE_EPOCH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return current
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class LeaderLease:
    """A Redis lease held by one token at a time; see the module docstring."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.client = client
        self.key = key
        self.epoch_key = f"{key}:epoch"
        self.ttl_seconds = ttl_seconds
        # Unique per lease, and readable as the leader's id (GetClusterStatus shows it): host, pid, random.
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Fencing epoch of the term this lease last opened; None before the first acquire.
        self.epoch: int | None = None
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._raise_epoch = client.register_script(_RAISE_EPOCH)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    async def try_acquire(self) -> bool:
        """SET key token NX PX ttl; on success a new term starts and `epoch` is its number."""
        epoch = int(await self._acquire(keys=[self.key, self.epoch_key], args=[self.token, self._ttl_ms]))
        if epoch <= 0:
            return False
        self.epoch = epoch
        return True

    async def renew(self) -> bool:
        """Extend the lease by a full TTL; False if it is no longer ours."""
        return int(await self._renew(keys=[self.key], args=[self.token, self._ttl_ms])) == 1

    async def release(self) -> bool:
        """Give the lease up now; does nothing (False) if someone else holds it."""
        return int(await self._release(keys=[self.key], args=[self.token])) == 1

    async def raise_epoch(self, epoch: int) -> int:
        """Make the next acquire's epoch exceed `epoch`; returns the counter's value."""
        return int(await self._raise_epoch(keys=[self.epoch_key], args=[epoch]))

    async def holder(self) -> str | None:
        """Token of the current holder, if any."""
        return _text(await self.client.get(self.key))

    async def remaining_seconds(self) -> float | None:
        """Time left on the lease, whoever holds it; None if nobody does."""
        ms = int(await self.client.pttl(self.key))
        return None if ms < 0 else ms / 1000


@dataclass(frozen=True, slots=True)
class Term:
    """One continuous period of leadership, handed to the work the leader runs."""

    epoch: int
    token: str


Lead = Callable[[Term], Coroutine[Any, Any, None]]


class Campaign:
    """Keep competing for `lease`; run `lead(term)` exactly while holding it."""

    def __init__(
        self,
        lease: LeaderLease,
        lead: Lead,
        *,
        name: str = "scheduler",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.lead = lead
        self.name = name
        self.clock = clock
        ttl = lease.ttl_seconds
        self.acquire_interval = ttl / 4
        self.renew_interval = ttl / 3
        self.retry_interval = ttl / 10
        # Step down this long before the lease could expire, for scheduling and clock jitter.
        self.safety_margin = ttl / 10
        self.term: Term | None = None
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._valid_until = 0.0
        self._last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    def _fields(self, **extra: object) -> dict[str, object]:
        return {"fields": {"lease_key": self.lease.key, "token": self.lease.token, "pid": os.getpid(), **extra}}

    async def run(self, stopping: asyncio.Event) -> None:
        """Campaign until `stopping` is set, then stop leading and release the lease."""
        log.info("%s joins the leader election", self.name, extra=self._fields(ttl_seconds=self.lease.ttl_seconds))
        try:
            while not stopping.is_set():
                delay = await (self._keep() if self.is_leader else self._compete())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), max(0.0, delay))
        finally:
            await self._shutdown()

    async def _compete(self) -> float:
        """One acquire attempt; returns how long to wait before the next step."""
        started = self.clock()
        try:
            async with asyncio.timeout(self.lease.ttl_seconds / 2):
                acquired = await self.lease.try_acquire()
                remaining = None if acquired else await self.lease.remaining_seconds()
        except Exception as exc:  # Redis down: a standby just keeps trying
            self._note_error("leader lease unavailable", exc)
            return self.acquire_interval
        self._last_error = None
        if not acquired:
            # Wake right when the current lease runs out, not up to ttl/4 later.
            return self.acquire_interval if remaining is None else min(self.acquire_interval, remaining + 0.005)
        assert self.lease.epoch is not None
        self._valid_until = started + self.lease.ttl_seconds
        self.term = Term(epoch=self.lease.epoch, token=self.lease.token)
        log.info("became leader", extra=self._fields(event="leader_elected", epoch=self.term.epoch))
        metrics.leading(self.term.epoch)
        self._task = asyncio.create_task(self._lead(self.term), name=f"{self.name}-leading")
        return min(self.renew_interval, self._time_left())

    async def _keep(self) -> float:
        """One renew attempt while leading; steps down if the lease cannot be vouched for."""
        if self._task is not None and self._task.done():
            self._task = None  # _lead already logged why; start over on this term
        if self._task is None and self.term is not None:
            self._task = asyncio.create_task(self._lead(self.term), name=f"{self.name}-leading")
        budget = self._time_left()
        if budget <= 0:
            await self._step_down("lease could not be renewed in time")
            return 0.0
        started = self.clock()
        try:
            async with asyncio.timeout(budget):
                renewed = await self.lease.renew()
        except Exception as exc:
            self._note_error("leader lease renew failed", exc)
            if self._time_left() <= 0:
                await self._step_down("lease could not be renewed in time")
                return 0.0
            return min(self.retry_interval, self._time_left())
        if not renewed:
            await self._step_down("lease lost to another holder")
            return 0.0
        self._last_error = None
        self._valid_until = started + self.lease.ttl_seconds
        return min(self.renew_interval, self._time_left())

    def _time_left(self) -> float:
        return self._valid_until - self.safety_margin - self.clock()

    async def _lead(self, term: Term) -> None:
        try:
            await self.lead(term)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leading task failed; restarting it", extra=self._fields(epoch=term.epoch))
            await asyncio.sleep(self.renew_interval)

    async def _stop_leading(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, self.lease.ttl_seconds)

    async def _step_down(self, reason: str) -> None:
        epoch = self.term.epoch if self.term else None
        await self._stop_leading()
        self.term = None
        metrics.not_leading()
        log.warning("stepped down", extra=self._fields(event="leader_lost", epoch=epoch, reason=reason))

    async def _shutdown(self) -> None:
        try:
            if self.term is None:
                return
            epoch = self.term.epoch
            await self._stop_leading()
            self.term = None
            metrics.not_leading()
            try:
                async with asyncio.timeout(self.lease.ttl_seconds):
                    released = await self.lease.release()
            except Exception as exc:
                log.warning("could not release the leader lease: %s", exc, extra=self._fields(epoch=epoch))
                return
            log.info("released leadership", extra=self._fields(event="leader_released", epoch=epoch, released=released))
        finally:
            self.finished.set()

    def _note_error(self, what: str, exc: BaseException) -> None:
        # Once per distinct error, so an outage does not flood the log every ttl/4.
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_error:
            log.warning("%s: %s", what, text, extra=self._fields())
            self._last_error = text
