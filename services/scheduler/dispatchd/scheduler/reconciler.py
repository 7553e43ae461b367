"""The leader's repair loop: make Redis and the owners of executions agree with Postgres.

Every pass is idempotent and safe to run twice at once (two leaders overlap for a moment
around a failover): each repair is a guarded store statement, and re-queueing is ZADD NX.
Every Postgres write of a pass is also fenced by the leader's epoch (store.fence): once a
newer leader has opened its term, a deposed leader's writes are refused (`Fenced`), and
the pass ends without changing anything.

1. Due QUEUED executions go (back) onto their ready queues: delayed jobs and retries that
   became due (the scheduler's own fast path, not a repair), and, repaired, what whoever
   queued it should have pushed but Redis lacks: after Redis lost its data, work a gateway
   popped but never claimed, a submit whose push failed. Such a row is repaired only once it
   has been missing for the grace period (`reconcile_grace_seconds`, see `absences`): the
   fast path is still handling a row missing for milliseconds. The timed rows come from a
   scan that starts at a watermark, so its cost follows what became due lately; the sweep
   for missing rows reads one page of the backlog per pass while it finds nothing amiss, so
   a backlog of 100,000 queued jobs costs a pass no more than one of 1,000 does.
2. Executions whose lease expired fail (an attempt, with backoff) and retry or dead-letter;
   so do executions running past their job's execution timeout. Either way the worker that
   may still be running one is told to stop (a CancelExecution through its gateway).
3. Workers whose heartbeats stopped go offline and their executions are released.
4. Active executions of terminal jobs are cancelled.

Between passes the loop sleeps until the next timed event (a QUEUED execution becoming due,
an attempt's deadline) or the safety-net interval passes, whichever is sooner. Whoever
creates such an event (a delayed submit, a retry with backoff, a claim with a deadline)
publishes its time on the scheduler channel, which shortens the sleep, so a retry with a
300 ms backoff runs ~300 ms later rather than at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from dispatchd.platform import job_events, metrics
from dispatchd.platform.config import Settings
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.store import executions, repairs, workers
from dispatchd.platform.store.fence import Fenced
from dispatchd.platform.store.rows import QueuedRef, Settlement
from dispatchd.platform.subscription import Subscription
from dispatchd.scheduler import metrics as scheduler_metrics
from dispatchd.scheduler.absences import Absences

log = logging.getLogger("dispatchd.scheduler.reconciler")

REQUEUE_PAGE = 1000
# How far before its previous scan the scan for newly due timed executions starts again:
# covers the gap between a row's available_at and its commit (a retry's transaction).
TIMED_LOOKBACK_SECONDS = 5.0
_LOWEST_ID = uuid.UUID(int=0)
EXPIRED_PAGE = 500
ERROR_BACKOFF_MIN = 0.1
ERROR_BACKOFF_MAX = 2.0
LEASE_EXPIRED = "lease expired"
HEARTBEAT_LOST = "worker heartbeat lost"
TIMED_OUT = "execution timed out"


@dataclass
class PassReport:
    """What one pass repaired; `more` means a page was full and another pass should follow now."""

    requeued: int = 0
    # Delayed executions the scheduler queued as they became due: its own job, not a repair.
    timed_queued: int = 0
    expired: int = 0
    timed_out: int = 0
    workers_offline: int = 0
    released: int = 0
    retries_queued: int = 0
    dead_lettered: int = 0
    orphans_cancelled: int = 0
    next_due: float | None = None
    more: bool = False

    def repairs(self) -> dict[str, int]:
        counts = {
            "requeued": self.requeued,
            "expired": self.expired,
            "timed_out": self.timed_out,
            "workers_offline": self.workers_offline,
            "released": self.released,
            "retries_queued": self.retries_queued,
            "dead_lettered": self.dead_lettered,
            "orphans_cancelled": self.orphans_cancelled,
        }
        return {k: v for k, v in counts.items() if v}


class Reconciler:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, queues: ReadyQueues) -> None:
        self.settings = settings
        self.pool = pool
        self.queues = queues
        self._requeue_after: QueuedRef | None = None
        # Where the next scan for newly due timed executions starts, and what it pushed lately.
        self._timed_after: tuple[dt.datetime, uuid.UUID] | None = None
        self._timed_pushed: dict[uuid.UUID, dt.datetime] = {}
        self.absences = Absences(settings.reconcile_grace_seconds)
        # Earliest monotonic time a wake-up message asked for, not yet served by a pass.
        self._requested = math.inf
        self._woken = asyncio.Event()
        # Wake-ups published while unsubscribed are lost: every (re)subscription asks for a pass now.
        self._wakeups = Subscription(
            queues.client,
            name="scheduler wake-ups",
            channels={queues.keys.scheduler_channel: self._on_wakeup},
            on_reconnect=lambda: self.wake_at(None),
        )
        # Fencing epoch of the current leadership term; None runs unfenced (tests, tools).
        self.epoch: int | None = None
        self.queue_gauges = scheduler_metrics.QueueGauges(pool)

    # -- one pass

    async def run_pass(self) -> PassReport:
        """One idempotent repair pass; raises Fenced (having changed nothing) if deposed."""
        report = PassReport()
        await self._requeue_due(report)
        await self._fail_expired(report)
        await self._fail_timed_out(report)
        await self._release_silent_workers(report)
        report.orphans_cancelled = await repairs.cancel_orphans(self.pool, epoch=self.epoch)
        # A pass must also look again when a remembered absence reaches the grace.
        waits = (await repairs.seconds_until_next_due(self.pool), self.absences.seconds_to_next())
        report.next_due = min((w for w in waits if w is not None), default=None)
        return report

    async def _requeue_due(self, report: PassReport) -> None:
        await self._queue_timed(report)
        await self._sweep_for_missing(report)

    async def _queue_timed(self, report: PassReport) -> None:
        """Push the delayed executions and retries that became due since the last look.

        The scan starts at a watermark on Postgres's clock, TIMED_LOOKBACK_SECONDS before the
        previous scan, so a row committed a little after its available_at is still seen; ids
        already pushed within the lookback are not pushed again. Anything older that the
        watermark passed by (a very late commit, a lost push) is the sweep's to repair.
        """
        page, scanned_at = await repairs.newly_due(self.pool, REQUEUE_PAGE, after=self._timed_after)
        if len(page) == REQUEUE_PAGE:  # more became due than one page holds: continue right after it
            self._timed_after = (page[-1].available_at, page[-1].execution_id)
            report.more = True
        else:
            self._timed_after = (scanned_at - dt.timedelta(seconds=TIMED_LOOKBACK_SECONDS), _LOWEST_ID)
        horizon = self._timed_after[0]
        self._timed_pushed = {k: at for k, at in self._timed_pushed.items() if at > horizon}
        fresh = [ref for ref in page if ref.execution_id not in self._timed_pushed]
        report.timed_queued = await self.queues.push(fresh, notify=False)
        self._timed_pushed.update((ref.execution_id, ref.available_at) for ref in fresh)
        if report.timed_queued:
            await self._notify_ready({ref.job_type for ref in fresh})

    async def _sweep_for_missing(self, report: PassReport) -> None:
        """Look at one page of the due backlog for executions Redis lacks; repair those missing past the grace.

        One page per pass while the pages are clean, so a deep backlog costs the same each
        second as a shallow one; when a page finds absences (Redis lost its data, a push
        failed) the sweep goes on at once, so recovery does not wait a pass per page.
        """
        page = await repairs.due_queued(self.pool, REQUEUE_PAGE, after=self._requeue_after)
        # Continue after this page next time while pages are full; start over once one is not.
        self._requeue_after = page[-1] if len(page) == REQUEUE_PAGE else None
        missing = await self.absences.overdue(self.queues, page)
        if self._requeue_after is None:
            self.absences.end_scan()
        report.more |= self._requeue_after is not None and self.absences.absent > 0
        report.requeued = await self.queues.push(missing, notify=False)
        self.absences.repaired(missing)
        if report.requeued:
            await self._notify_ready({ref.job_type for ref in missing})

    async def _notify_ready(self, job_types: Iterable[str]) -> None:
        pipe = self.queues.client.pipeline(transaction=False)
        for job_type in sorted(job_types):
            pipe.publish(self.queues.keys.ready_channel, job_type)
        await pipe.execute()

    async def _fail_expired(self, report: PassReport) -> None:
        ids = await repairs.expired_leases(self.pool, EXPIRED_PAGE)
        report.more |= len(ids) == EXPIRED_PAGE
        # The guard re-checks the expiry in the same statement: a heartbeat that renewed
        # the lease since the SELECT wins, and a second leader's duplicate is a no-op.
        owner = executions.Owner(lease_expired=True)
        report.expired += await self._fail([(i, owner) for i in ids], LEASE_EXPIRED, report)

    async def _fail_timed_out(self, report: PassReport) -> None:
        ids = await repairs.timed_out(self.pool, EXPIRED_PAGE)
        report.more |= len(ids) == EXPIRED_PAGE
        # A failed attempt like any other: retried after backoff, or dead-lettered.
        owner = executions.Owner(deadline_passed=True)
        report.timed_out += await self._fail([(i, owner) for i in ids], TIMED_OUT, report)

    async def _release_silent_workers(self, report: PassReport) -> None:
        silent = await workers.mark_silent_offline(self.pool, self.settings.worker_offline_seconds, epoch=self.epoch)
        report.workers_offline = len(silent)
        for worker_id, session_id in silent:
            log.info(
                "worker went silent; marked offline",
                extra={"fields": {"worker_id": worker_id, "session_id": str(session_id)}},
            )
        # Everything still held by an offline worker's session: just marked, or left over by a
        # pass (or a gateway) that died between marking and releasing. Idempotent either way.
        held = await repairs.owned_by_offline_workers(self.pool, EXPIRED_PAGE)
        report.more |= len(held) == EXPIRED_PAGE
        owned = [(e, executions.Owner(worker_id=w, session_id=s)) for e, w, s in held]
        report.released += await self._fail(owned, HEARTBEAT_LOST, report, retry_delay_ms=0)

    async def _fail(
        self,
        owned: list[tuple[uuid.UUID, executions.Owner]],
        reason: str,
        report: PassReport,
        *,
        retry_delay_ms: int | None = None,
    ) -> int:
        """Fail each execution its owner still holds, announce the outcomes; returns how many failed."""
        settled = []
        for execution_id, owner in owned:
            settlement = await executions.fail(
                self.pool, execution_id, owner, reason, retry_delay_ms=retry_delay_ms, epoch=self.epoch
            )
            if settlement.applied:
                settled.append(settlement)
        await self._announce(settled, report, stop_reason=reason)
        return len(settled)

    async def _announce(self, settled: list[Settlement], report: PassReport, *, stop_reason: str) -> None:
        """Tell Redis what Postgres decided: push retries that are due, publish terminal jobs,
        and tell workers that may still run a settled execution to stop."""
        metrics.count_settled(settled)
        now = dt.datetime.now(dt.UTC)
        due = []
        for s in settled:
            if s.retry is not None:
                report.retries_queued += 1
                if s.retry.available_at <= now:
                    due.append(s.retry)
            if s.job_status is not None and s.job_status in JOB_TERMINAL and s.job_id is not None:
                report.dead_lettered += 1
                await self.queues.publish_job_event(str(s.job_id), int(s.job_status), s.job_type)
            # A dead-lettered workflow step with continue_on_failure may release its dependants.
            due += s.released
            for job_id, status in s.ended:
                await self.queues.publish_job_event(str(job_id), int(status))
        retrying = job_events.retries(settled)
        if due or retrying:
            pipe = self.queues.client.pipeline(transaction=False)
            self.queues.stage_job_activity(pipe, retrying)
            self.queues.stage_push(pipe, due)
            await pipe.execute()
        # Retries still in backoff are covered by next_due, computed at the end of the pass.
        for s in settled:
            if s.execution_id is not None and s.worker_id:
                try:
                    await self.queues.publish_cancel(str(s.execution_id), s.worker_id, stop_reason)
                except Exception as exc:  # a listing worker is told again at its next heartbeat
                    metrics.count_store_error(exc, "redis")
                    log.warning("could not tell worker %s to stop %s: %s", s.worker_id, s.execution_id, exc)

    # -- the loop

    async def lead(self, epoch: int | None = None) -> None:
        """Run passes until cancelled (the campaign cancels this when leadership ends).

        Raises Fenced when a newer leader's epoch is recorded: this term is over.
        """
        self.epoch = epoch
        listener = asyncio.create_task(self._wakeups.run(), name="scheduler-wakeups")
        gauges = asyncio.create_task(
            metrics.sample_every(scheduler_metrics.QUEUE_SAMPLE_SECONDS, self.queue_gauges.sample),
            name="scheduler-queue-gauges",
        )
        try:
            await self._loop()
        finally:
            for task in (listener, gauges):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.queue_gauges.clear()

    async def _loop(self) -> None:
        backoff = ERROR_BACKOFF_MIN
        while True:
            # Whatever was committed before this point is seen by the pass's queries.
            self._requested = math.inf
            started = time.perf_counter()
            try:
                report = await self.run_pass()
            except (asyncio.CancelledError, Fenced):
                raise
            except Exception as exc:  # PG or Redis down: the next pass repairs what this one could not
                metrics.count_store_error(exc)
                log.warning("reconcile pass failed: %s", exc, extra={"fields": {"retry_in": backoff}})
                await self._sleep(backoff)
                backoff = min(backoff * 2, ERROR_BACKOFF_MAX)
                continue
            backoff = ERROR_BACKOFF_MIN
            scheduler_metrics.count_pass(report, time.perf_counter() - started)
            repaired = report.repairs()
            if repaired:
                log.info("reconcile pass repaired", extra={"fields": repaired})
            if report.more:
                continue
            delay = self.settings.reconcile_seconds
            if report.next_due is not None:
                delay = min(delay, report.next_due)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if a wake-up message asks for an earlier pass."""
        deadline = time.monotonic() + delay
        while True:
            self._woken.clear()
            remaining = min(deadline, self._requested) - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), remaining)

    def wake_at(self, due_epoch_seconds: float | None) -> None:
        """Ask for a pass at this wall-clock time (None: now)."""
        delay = 0.0 if due_epoch_seconds is None else max(0.0, due_epoch_seconds - time.time())
        at = time.monotonic() + delay
        if at < self._requested:
            self._requested = at
            self._woken.set()

    def _on_wakeup(self, data: str) -> None:
        self.wake_at(_due_time(data))


def _due_time(data: str) -> float | None:
    """Payload is the due time in epoch seconds; anything else means "look now"."""
    try:
        value = float(data)
    except ValueError:
        log.warning("malformed wake-up %r; running a pass now", data)
        return None
    return value if math.isfinite(value) else None
