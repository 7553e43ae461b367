"""Scheduler process: leader election plus the reconcile loop; serves only gRPC health.

Run several replicas: one leads (holds the Redis lease) and repairs, the others stand by
and take over within about a lease TTL of the leader dying, or at once when it shuts
down gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dispatchd.platform import command_line, server
from dispatchd.platform.queues import ReadyQueues
from dispatchd.platform.regions import Region
from dispatchd.scheduler.fencing import FencedLeadership
from dispatchd.scheduler.leader import Campaign, LeaderLease
from dispatchd.scheduler.reconciler import Reconciler
from dispatchd.scheduler.schedules import ScheduleFirer

log = logging.getLogger("dispatchd.scheduler")


async def build(runtime: server.Runtime) -> server.Service:
    settings = runtime.settings
    region = Region.from_settings(settings)
    if region.passive:
        # A passive region reads a replica: leading would mean repairing (writing) it.
        log.info(
            "region %s is passive: this scheduler will not campaign for leadership",
            region.name,
            extra={"fields": {"region": region.name, "primary_region": region.primary}},
        )
        return server.Service(register=lambda srv: None, service_names=[])
    queues = ReadyQueues(runtime.redis, settings.redis_prefix, aging_seconds=settings.priority_aging_seconds)
    reconciler = Reconciler(settings, runtime.pool, queues)
    lease = LeaderLease(runtime.redis, queues.keys.leader, settings.leader_ttl_seconds)
    # Every Postgres write of the leader is fenced by its term's epoch (see fencing.py).
    firer = ScheduleFirer(settings, runtime.pool, queues)
    campaign = Campaign(lease, FencedLeadership(runtime.pool, lease, reconciler, also=[firer]).lead)

    async def campaign_task() -> None:
        # Lead only while the database records this region as the primary: a demoted region
        # (or one whose promotion is not recorded yet) must not repair what it cannot own.
        await runtime.fence.while_open(runtime.stopping, campaign.run)

    async def hand_over() -> None:
        # Keep the process (and its Redis client) alive until the lease is released,
        # so a standby takes over now rather than after the TTL.
        if not campaign.is_leader:
            return  # nothing to hand over (never led, or the region fence closed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(campaign.finished.wait(), settings.leader_ttl_seconds + 1)

    runtime.on_shutdown.append(hand_over)
    return server.Service(register=lambda srv: None, service_names=[], tasks=[campaign_task])


def main(argv: list[str] | None = None) -> None:
    command_line.service_main(
        "scheduler",
        __doc__,
        "scheduler_listen",
        build,
        argv,
    )


if __name__ == "__main__":
    main()
