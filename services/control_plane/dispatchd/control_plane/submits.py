"""Group commit of submits: the jobs of every call that arrives within one event-loop turn
(single SubmitJob calls and whole BatchSubmitJobs alike) go to Postgres in one transaction,
by one set-based statement, and to Redis in one pipeline.

Invariants: a caller is answered only after the transaction holding its jobs committed
(and the push to Redis was tried); every caller is answered, with its own outcome per job
or with the exception that failed its transaction, never left waiting; one call's jobs are
never split over two transactions, unless a row's data was refused (DataError): then the
transaction is repeated job by job, so only that job fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from dispatchd.platform import metrics
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.job_events import JobEvent, Kind
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.store import submits
from dispatchd.platform.store.submits import NewJob

log = logging.getLogger("dispatchd.control_plane")

# One job's outcome: its job (new or deduplicated), or why it was refused.
Outcome = submits.Submitted | Exception

# Bound on how long a commit waits for Redis before answering without it.
REDIS_BUDGET_SECONDS = 2.0
# Transactions in flight at once. Calls arriving while all are busy wait for the next one,
# so batches grow with the load instead of the connections in use. A group's Redis push
# runs after its commit, beside the next group's transaction. Measured (64 single submits in
# flight, audit on): 1 gave ~1,300-1,550 calls/s at 0.43-0.45 ms of CPU per job; 2 gave
# ~1,100-1,280 at 0.52-0.60; 4 gave ~920 at 0.60 (larger groups cost less per job).
MAX_IN_FLIGHT = 1


@dataclass(eq=False)
class Waiting:
    """One call's jobs and where its outcomes go."""

    news: Sequence[NewJob]
    answer: asyncio.Future[list[Outcome]]


@dataclass(eq=False)
class Submitter:
    pool: asyncpg.Pool
    queues: ReadyQueues
    # Transactions committed: a test reads it to see several calls share one.
    transactions: int = 0
    _pending: list[Waiting] = field(default_factory=list)
    _scheduled: bool = False
    _in_flight: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, news: Sequence[NewJob]) -> list[Outcome]:
        """Submit `news` with whatever else arrives in this loop turn; one outcome per job.

        Raises what failed the whole transaction (e.g. Postgres unreachable): then none of them was stored.
        """
        waiting = Waiting(news, asyncio.get_running_loop().create_future())
        self._pending.append(waiting)
        self._schedule()
        return await waiting.answer

    def _schedule(self) -> None:
        # The flush task is created at once; it takes the pending calls only when it first
        # runs, after this loop turn's callbacks, so calls arriving in the same turn join it.
        if self._scheduled or self._in_flight >= MAX_IN_FLIGHT:
            return  # the flush about to run takes them, or the running one starts the next
        self._scheduled = True
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        self._scheduled = False
        group, self._pending = self._pending, []
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight -= 1
                if self._pending:
                    self._schedule()

        try:
            outcomes = await self._store([new for waiting in group for new in waiting.news])
            # Committed: the next group's transaction may start while these jobs go to Redis.
            release()
            await self._push(outcomes)
            offset = 0
            for waiting in group:
                _settle(waiting, outcomes[offset : offset + len(waiting.news)])
                offset += len(waiting.news)
        except BaseException as exc:
            for waiting in group:
                _settle(waiting, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            release()

    async def _store(self, news: list[NewJob]) -> list[Outcome]:
        try:
            async with self.pool.acquire() as conn:
                if any(new.scope() is not None for new in news):
                    async with conn.transaction():
                        outcomes: list[Outcome] = list(await submits.submit_all(conn, news))
                else:
                    # Without idempotency keys it is one INSERT statement, atomic on its own:
                    # BEGIN and COMMIT around it would only add two round trips.
                    outcomes = list(await submits.submit_all(conn, news))
        except asyncpg.DataError as exc:
            if len(news) == 1:
                return [InvalidArgument(f"the job could not be stored: {exc}")]
            log.warning("a job of a group of %d was refused by Postgres; submitting them one by one", len(news))
            return [await self._store_alone(new) for new in news]
        self.transactions += 1
        return outcomes

    async def _store_alone(self, new: NewJob) -> Outcome:
        try:
            return (await self._store([new]))[0]
        except Exception as exc:  # this job's failure; the others of its group go on
            return exc

    async def _push(self, outcomes: list[Outcome]) -> None:
        new = [o for o in outcomes if isinstance(o, submits.Submitted) and o.queued is not None]
        queued = [o.queued for o in new if o.queued is not None]
        for ref in queued:
            metrics.for_type(ref.job_type).submitted.inc()
        if not queued:
            return
        # Watchers hear of the new jobs in the same pipeline: one more PUBLISH per group.
        activity = [JobEvent(str(o.job.job_id), o.job.job_type, Kind.SUBMITTED, int(o.job.status), 1) for o in new]
        try:
            async with asyncio.timeout(REDIS_BUDGET_SECONDS):
                await self.queues.enqueue(queued, activity)
        except Exception as exc:  # the jobs are safe in Postgres; the scheduler queues them
            metrics.count_store_error(exc, "redis")
            log.warning("could not push %d new job(s) to their ready queues (the scheduler will): %s", len(queued), exc)


def _settle(waiting: Waiting, result: list[Outcome] | BaseException) -> None:
    if waiting.answer.done():  # the caller went away (cancelled); its jobs stay submitted
        return
    if isinstance(result, Exception):
        waiting.answer.set_exception(result)
    elif isinstance(result, BaseException):  # shutting down
        waiting.answer.cancel()
    else:
        waiting.answer.set_result(result)
