"""Who holds the scheduler's leader lease, read from Redis.

Invariant: a scheduler "leads" for a test once it holds the lease AND listens on the
scheduler channel; before both, a published wake-up could be lost.
"""

from __future__ import annotations

import redis.asyncio

from dispatchd.platform.queues import Keys
from tests.support.polling import eventually
from tests.support.submissions import PREFIX

KEYS = Keys(PREFIX)


async def leader_token(client: redis.asyncio.Redis) -> str | None:
    value = await client.get(KEYS.leader)
    return value.decode() if isinstance(value, bytes) else value


async def wait_leading(client: redis.asyncio.Redis, token: str | None = None, timeout: float = 10) -> None:
    """Until a scheduler (the one whose lease token is `token`, if given) leads."""

    async def leading() -> bool:
        holder = await leader_token(client)
        subscribed = dict(await client.pubsub_numsub(KEYS.scheduler_channel))
        listening = subscribed.get(KEYS.scheduler_channel.encode(), 0) >= 1
        return holder is not None and (token is None or holder == token) and listening

    await eventually(leading, timeout, f"scheduler {token or '(any)'} leads")
