"""The SDK's token renewal: when it looks for a fresher token, and which file contents it sends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dispatchd.common.security import ClientSecurity
from dispatchd.sdk.outbox import Outbox
from dispatchd.sdk.renewal import REFRESH_AT, TokenRenewal, lifetime
from tests.support.security import b64url, forge


def _token(**claims: object) -> str:
    return forge({"alg": "ES256"}, claims, lambda data: b"sig")


def test_lifetime_reads_iat_and_exp_without_verifying() -> None:
    span = lifetime(_token(iat=1000, exp=2000), opened=1500)
    assert span is not None and span.due == 1000 + REFRESH_AT * 1000
    # No usable iat: the lifetime counts from when the stream opened.
    assert lifetime(_token(exp=2000, iat="x"), opened=1500) == lifetime(_token(exp=2000), opened=1500)
    assert lifetime(_token(exp=2000), opened=1500).issued == 1500  # type: ignore[union-attr]
    for no_exp in (_token(iat=1), _token(exp="2000"), _token(exp=True), "a.b.c", "nodots", f"a.{b64url(b'[]')}.c"):
        assert lifetime(no_exp, opened=0) is None, no_exp


async def test_renewal_sends_the_file_token_once_it_expires_later(tmp_path: Path) -> None:
    now = time.time()
    opened_with = _token(iat=now - 20, exp=now + 5)  # past 80% of its lifetime: due at once
    token_file = tmp_path / "t.jwt"
    token_file.write_text(opened_with)
    outbox = Outbox()
    renewal = TokenRenewal(ClientSecurity(token_file=token_file), outbox, opened_with)
    task = asyncio.create_task(renewal.run())
    try:
        await asyncio.sleep(0.7)
        assert len(outbox) == 0  # the file still holds the stream's own token
        token_file.write_text(_token(iat=now, exp=now + 1))  # expires earlier: not fresher
        await asyncio.sleep(2.6)  # two of the loop's retries (about 1.25 s apart) see it
        assert len(outbox) == 0
        fresh = _token(iat=now, exp=now + 600)
        token_file.write_text(fresh + "\n")
        message = await asyncio.wait_for(outbox.get(), 3)
        assert message is not None and message.token_refresh.token == fresh
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
