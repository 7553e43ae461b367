"""What follows a settled execution: Redis learns what Postgres already decided.

Everything here is a notification. When Redis is unreachable we log and go on: the
scheduler re-queues due executions from Postgres and job watchers re-read the job.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.store.rows import QueuedRef, Settlement

log = logging.getLogger("dispatchd.gateway.outcomes")


class Outcomes:
    def __init__(self, queues: ReadyQueues) -> None:
        self.queues = queues

    async def announce(self, settlements: Iterable[Settlement]) -> None:
        now = dt.datetime.now(dt.UTC)
        ready: list[QueuedRef] = []
        later: list[QueuedRef] = []
        finished: list[Settlement] = []
        for s in settlements:
            if not s.applied:
                continue
            if s.retry is not None:
                (ready if s.retry.available_at <= now else later).append(s.retry)
            if s.job_status is not None and s.job_status in JOB_TERMINAL and s.job_id is not None:
                finished.append(s)
        try:
            if ready:
                await self.queues.push(ready)
            if later:
                # The scheduler's timer sleeps until the next due attempt; tell it about this one.
                due = min(r.available_at for r in later).timestamp()
                await self.queues.client.publish(self.queues.keys.scheduler_channel, f"{due:.3f}")
            for s in finished:
                assert s.job_id is not None and s.job_status is not None
                await self.queues.publish_job_event(str(s.job_id), int(s.job_status))
        except Exception as exc:  # Redis is only a hint; the scheduler repairs from Postgres
            log.warning("could not announce settled executions: %s", exc)
