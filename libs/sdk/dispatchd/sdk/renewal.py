"""Keeping an open stream's token fresh, so a token rotation never ends a stream or its work.

The gateway ends a stream when the token it was opened with expires (UNAUTHENTICATED "token
expired"), unless the worker sends a fresh one (`TokenRefresh`) first. Only gateways that
announced `supports_token_refresh` on the registration ack get one, and only a worker with a
`--token-file` has a fresher token to send: the file is re-read once `REFRESH_AT` of the
current token's lifetime (from `iat`, else from when the stream opened, to `exp`) has passed,
then at short intervals until the file holds a token expiring later than the current one.
That token is sent once; the gateway acknowledges it with a WorkerAck of kind "token".

The token is only read here, never verified: `iat` and `exp` just say when to look again,
and the gateway checks everything else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass

from dispatchd.common.security import ClientSecurity, CredentialsError
from dispatchd.sdk.outbox import Outbox
from dispatchd.v1 import worker_service_pb2 as pb

log = logging.getLogger("dispatchd.sdk.renewal")

# The share of a token's lifetime after which a fresher one is looked for.
REFRESH_AT = 0.8
# How often the file is looked at again while it still holds no fresher token.
MIN_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class Lifetime:
    issued: float
    expires: float

    @property
    def due(self) -> float:
        """When to look for a fresher token."""
        return self.issued + REFRESH_AT * (self.expires - self.issued)

    @property
    def retry(self) -> float:
        return min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, (self.expires - self.issued) / 20))


def lifetime(token: str, opened: float) -> Lifetime | None:
    """The token's `iat` (default `opened`) and `exp`, read without verifying; None without a numeric `exp`."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) and iat < exp else opened
    return Lifetime(issued=min(issued, float(exp)), expires=float(exp))


class TokenRenewal:
    """Sends a fresher token from `security.token_file` on the stream before the current one expires."""

    def __init__(self, security: ClientSecurity, outbox: Outbox, opened_with: str) -> None:
        self.security = security
        self.outbox = outbox
        self.current = opened_with
        self.opened = time.time()

    async def run(self) -> None:
        while (current := lifetime(self.current, self.opened)) is not None:
            await asyncio.sleep(max(0.0, current.due - time.time()))
            while (fresh := self._fresher(current)) is None:
                remaining = current.expires - time.time()
                if remaining <= 0:
                    log.warning("the stream's token expired and %s holds no fresher one", self.security.token_file)
                    return
                await asyncio.sleep(min(current.retry, remaining))
            self.current = fresh
            self.outbox.put(pb.ConnectRequest(token_refresh=pb.TokenRefresh(token=fresh)))

    def _fresher(self, current: Lifetime) -> str | None:
        try:
            token = self.security.bearer()
        except CredentialsError as exc:  # being replaced, say: look again soon
            log.warning("cannot read a fresh token: %s", exc)
            return None
        if token is None or token == self.current:
            return None
        fresh = lifetime(token, time.time())
        return token if fresh is not None and fresh.expires > current.expires else None
