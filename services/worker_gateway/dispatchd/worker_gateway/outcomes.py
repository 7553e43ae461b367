"""What follows settled executions: Redis learns what Postgres already decided.

Everything here is a notification, sent after the commit. One call covers a whole batch of
settlements in one Redis pipeline (one round trip): the retries go onto their ready queues
(or to the scheduler's timer when not yet due), every finished job's event is published, and
the batch's starts and retries go to watchers as one activity message.
When Redis is unreachable we log and go on: the scheduler re-queues due executions from
Postgres and job watchers re-read the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from dispatchd.platform import job_events, metrics
from dispatchd.platform.job_events import JobEvent
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.states import JOB_TERMINAL
from dispatchd.platform.store.rows import Settlement

log = logging.getLogger("dispatchd.gateway.outcomes")


class Outcomes:
    def __init__(self, queues: ReadyQueues) -> None:
        self.queues = queues

    async def announce(self, settlements: Iterable[Settlement], began: Sequence[JobEvent] = ()) -> None:
        """`began`: the STARTED events of the batch's start notices that applied."""
        settlements = [s for s in settlements if s.applied]
        metrics.count_settled(settlements)
        if not settlements and not began:
            return
        pipe = self.queues.client.pipeline(transaction=False)
        # Watchers' events first: a start (or retry) is published before the job's next move.
        self.queues.stage_job_activity(pipe, [*began, *job_events.retries(settlements)])
        self.queues.stage_enqueue(pipe, [s.retry for s in settlements if s.retry is not None])
        for s in settlements:
            if s.job_status is not None and s.job_status in JOB_TERMINAL and s.job_id is not None:
                self.queues.stage_job_event(pipe, str(s.job_id), int(s.job_status), s.job_type)
        try:
            await pipe.execute()
        except Exception as exc:  # Redis is only a hint; the scheduler repairs from Postgres
            metrics.count_store_error(exc, "redis")
            log.warning("could not announce settled executions: %s", exc)
