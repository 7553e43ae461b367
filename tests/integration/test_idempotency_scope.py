"""Idempotency keys are scoped per submitter, in the store (the API's view: tests/security/test_inputs.py).

A key names one job of one submitter; submits without authentication share one scope.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from dispatchd.platform.errors import AlreadyExists
from dispatchd.platform.store import submits
from tests.support.submissions import submit

pytestmark = pytest.mark.integration


async def _submit(pool: asyncpg.Pool, key: str, submitter: str | None, payload: bytes = b"p") -> submits.Submitted:
    return await submit(pool, job_type="scope.test", payload=payload, key=key, submitted_by=submitter)


async def test_one_key_names_one_job_per_submitter(db_pool: asyncpg.Pool) -> None:
    key = f"k-{uuid.uuid4().hex}"
    bobs = await _submit(db_pool, key, "bob")
    alices = await _submit(db_pool, key, "alice")
    anonymous = await _submit(db_pool, key, None)
    made = [bobs, alices, anonymous]
    assert not any(s.deduplicated for s in made) and all(s.queued is not None for s in made)
    assert len({s.job.job_id for s in made}) == 3

    for submitter, first in (("bob", bobs), ("alice", alices), (None, anonymous)):
        again = await _submit(db_pool, key, submitter)
        assert again.deduplicated and again.job.job_id == first.job.job_id and again.queued is None
        with pytest.raises(AlreadyExists) as caught:
            await _submit(db_pool, key, submitter, payload=b"other")
        others = {str(s.job.job_id) for s in made} - {str(first.job.job_id)}
        assert str(first.job.job_id) in str(caught.value)
        assert not any(other in str(caught.value) for other in others)
    assert await db_pool.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key) == 3


@pytest.mark.parametrize("submitter", ["alice", None])
async def test_concurrent_submits_of_one_key_make_one_job(db_pool: asyncpg.Pool, submitter: str | None) -> None:
    key = f"k-{uuid.uuid4().hex}"
    made = await asyncio.gather(*(_submit(db_pool, key, submitter) for _ in range(5)))
    assert len({s.job.job_id for s in made}) == 1
    assert sum(not s.deduplicated for s in made) == 1
