"""The scheduler's leader lease and campaign, against a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from dispatchd.scheduler.leader import Campaign, Lead, LeaderLease, Term

pytestmark = pytest.mark.integration

KEY = "test:scheduler:leader"


async def test_only_one_of_two_leases_acquires(redis_client: redis.asyncio.Redis) -> None:
    a, b = LeaderLease(redis_client, KEY, 2.0), LeaderLease(redis_client, KEY, 2.0)
    assert a.token != b.token
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert await a.holder() == a.token == await b.holder()
    assert a.epoch == 1 and b.epoch is None
    ttl = await a.remaining_seconds()
    assert ttl is not None and 1.5 < ttl <= 2.0


async def test_renew_by_non_holder_fails(redis_client: redis.asyncio.Redis) -> None:
    a, b = LeaderLease(redis_client, KEY, 1.0), LeaderLease(redis_client, KEY, 30.0)
    assert await a.try_acquire()
    assert not await b.renew()
    ttl = await a.remaining_seconds()
    assert ttl is not None and ttl <= 1.0  # b's longer TTL was not applied
    assert await a.renew()


async def test_release_by_non_holder_does_nothing(redis_client: redis.asyncio.Redis) -> None:
    a, b = LeaderLease(redis_client, KEY, 2.0), LeaderLease(redis_client, KEY, 2.0)
    assert await a.try_acquire()
    assert not await b.release()
    assert await a.holder() == a.token
    assert await a.release()
    assert await a.holder() is None
    assert await b.try_acquire()


async def test_every_acquire_opens_a_new_epoch(redis_client: redis.asyncio.Redis) -> None:
    a, b = LeaderLease(redis_client, KEY, 2.0), LeaderLease(redis_client, KEY, 2.0)
    assert await a.try_acquire()
    assert await a.release()
    assert await b.try_acquire()
    assert await b.release()
    assert await a.try_acquire()
    assert (a.epoch, b.epoch) == (3, 2)
    # Re-taking a lease that is still ours (after stepping down) also starts a new term.
    assert await a.try_acquire()
    assert a.epoch == 4


async def test_takeover_after_holder_stops_renewing(redis_client: redis.asyncio.Redis) -> None:
    ttl = 0.4
    holder = LeaderLease(redis_client, KEY, ttl)
    assert await holder.try_acquire()
    elected = asyncio.Event()

    async def lead(term: Term) -> None:
        elected.set()
        await asyncio.Event().wait()

    stopping = asyncio.Event()
    standby = Campaign(LeaderLease(redis_client, KEY, ttl), lead)
    task = asyncio.create_task(standby.run(stopping))
    try:
        # The holder never renews: only its lease running out lets the standby in.
        await asyncio.wait_for(elected.wait(), 2.0)
        assert standby.is_leader
        assert await holder.holder() == standby.lease.token
        assert not await holder.renew()
    finally:
        stopping.set()
        await task
    assert await holder.holder() is None  # released on shutdown


async def _campaigns(
    redis_client: redis.asyncio.Redis, ttl: float, n: int
) -> tuple[list[Campaign], dict[int, asyncio.Event], dict[int, asyncio.Event], list[tuple[int, str]]]:
    """`n` campaigns whose leading work records when it starts and when it is stopped."""
    events: list[tuple[int, str]] = []
    elected = {i: asyncio.Event() for i in range(n)}
    ended = {i: asyncio.Event() for i in range(n)}

    def leader_of(i: int) -> Lead:
        async def lead(term: Term) -> None:
            events.append((i, "start"))
            elected[i].set()
            try:
                await asyncio.Event().wait()
            finally:
                events.append((i, "stop"))
                ended[i].set()

        return lead

    campaigns = [Campaign(LeaderLease(redis_client, KEY, ttl), leader_of(i)) for i in range(n)]
    return campaigns, elected, ended, events


async def test_exactly_one_campaign_leads_and_hands_over_on_shutdown(redis_client: redis.asyncio.Redis) -> None:
    # A 4 s lease renewed every 4/3 s: the standby (trying every second) can be elected within
    # 2 s of the stop only if the lease was released rather than left to run out.
    campaigns, elected, _ended, events = await _campaigns(redis_client, 4.0, 2)
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(c.run(s)) for c, s in zip(campaigns, stops, strict=True)]
    try:
        done, _ = await asyncio.wait(
            [asyncio.create_task(e.wait()) for e in elected.values()],
            timeout=5,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert done
        await asyncio.sleep(1.5)  # a renewal and a standby's attempt later: still exactly one leader
        leaders = [i for i, c in enumerate(campaigns) if c.is_leader]
        assert len(leaders) == 1
        first = leaders[0]
        other = 1 - first
        stops[first].set()
        await tasks[first]
        await asyncio.wait_for(elected[other].wait(), 2.0)
        assert events[:2] == [(first, "start"), (first, "stop")]
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks)


async def test_leader_steps_down_when_its_lease_is_taken(redis_client: redis.asyncio.Redis) -> None:
    ttl = 0.6
    campaigns, elected, ended, events = await _campaigns(redis_client, ttl, 1)
    stopping = asyncio.Event()
    task = asyncio.create_task(campaigns[0].run(stopping))
    try:
        await asyncio.wait_for(elected[0].wait(), 1.0)
        # Someone else now holds the key (e.g. Redis lost it and another replica won).
        await redis_client.set(KEY, "intruder", px=60_000)
        # The intruder's lease outlives the test: only a failed renewal can end the leading.
        await asyncio.wait_for(ended[0].wait(), 2)
        assert not campaigns[0].is_leader
        assert events == [(0, "start"), (0, "stop")]
        assert await redis_client.get(KEY) == b"intruder"
    finally:
        stopping.set()
        await task
    assert await redis_client.get(KEY) == b"intruder"  # shutdown never deletes another's lease


async def test_leader_steps_down_before_expiry_when_redis_is_unreachable(
    redis_client: redis.asyncio.Redis, redis_url: str
) -> None:
    ttl = 0.5
    client = redis.asyncio.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    campaigns, elected, ended, events = await _campaigns(client, ttl, 1)
    stopping = asyncio.Event()
    task = asyncio.create_task(campaigns[0].run(stopping))
    try:
        await asyncio.wait_for(elected[0].wait(), 1.0)
        expires_at = time.monotonic() + await redis_client.pttl(KEY) / 1000
        # Redis stops answering (as in a network partition): renewals hang until they time out.
        await redis_client.client_pause(3000, all=True)
        await asyncio.wait_for(ended[0].wait(), 2)
        # Leading stopped before the lease could have expired in Redis (and been taken).
        margin = expires_at - time.monotonic()
        assert margin > 0, f"stepped down {-margin:.3f}s after the lease expired"
        print(f"stepped down {margin * 1000:.0f} ms before the lease could expire")
        assert events == [(0, "start"), (0, "stop")]
    finally:
        await redis_client.client_unpause()
        stopping.set()
        await task
        await client.aclose()
