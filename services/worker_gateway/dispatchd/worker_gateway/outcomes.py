"""What follows a settled execution: Redis learns what Postgres already decided.

Everything here is a notification. When Redis is unreachable we log and go on: the
scheduler re-queues due executions from Postgres and job watchers re-read the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from dispatchd.platform import metrics
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.store.rows import QueuedRef, Settlement

log = logging.getLogger("dispatchd.gateway.outcomes")


class Outcomes:
    def __init__(self, queues: ReadyQueues) -> None:
        self.queues = queues

    async def announce(self, settlements: Iterable[Settlement]) -> None:
        settlements = list(settlements)
        metrics.count_settled(settlements)
        retries: list[QueuedRef] = []
        finished: list[Settlement] = []
        for s in settlements:
            if not s.applied:
                continue
            if s.retry is not None:
                retries.append(s.retry)
            if s.job_status is not None and s.job_status in JOB_TERMINAL and s.job_id is not None:
                finished.append(s)
        try:
            if retries:
                await self.queues.enqueue(retries)
            for s in finished:
                assert s.job_id is not None and s.job_status is not None
                await self.queues.publish_job_event(str(s.job_id), int(s.job_status))
        except Exception as exc:  # Redis is only a hint; the scheduler repairs from Postgres
            metrics.count_store_error(exc, "redis")
            log.warning("could not announce settled executions: %s", exc)
