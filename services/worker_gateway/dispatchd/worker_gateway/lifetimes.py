"""How long a worker stream may live: until its token expires, unless a fresh one arrives.

A stream opened with a token (authentication on) has one timer, set to the instant the token
stops being accepted (its `exp` plus the verifier's leeway, `Principal.valid_until`). When it
fires, the stream ends UNAUTHENTICATED "token expired" and what it held is released, as on any
stream end. A `TokenRefresh` on the stream is checked exactly as the opening token was
(`security.renewal`): ACCEPTED moves the timer to the fresh token's expiry; REJECTED (with the
reason) changes nothing, so a refused refresh can never extend a stream. Streams without a
token (authentication off, mTLS only) have no timer, and their refreshes are acknowledged
ACCEPTED without effect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

import grpc

from dispatchd.platform.security import renewal
from dispatchd.platform.security.renewal import RefreshRefused, Renewal
from dispatchd.v1 import worker_service_pb2 as pb
from dispatchd.worker_gateway.sessions import Session, StreamEnd

log = logging.getLogger("dispatchd.gateway.lifetimes")

TOKEN_EXPIRED = StreamEnd(grpc.StatusCode.UNAUTHENTICATED, "token expired")
KIND = "token"


@dataclass(eq=False)
class _Lifetime:
    renewal: Renewal
    timer: asyncio.TimerHandle | None = None


def _expire(session: Session) -> None:
    log.info("worker token expired; ending its stream", extra={"fields": {"worker_id": session.worker_id}})
    session.release_reason = "worker token expired"
    session.close(TOKEN_EXPIRED)


class TokenLifetimes:
    """The expiry timer of every open stream that has a token."""

    def __init__(self) -> None:
        self._streams: dict[Session, _Lifetime] = {}

    def open(self, session: Session) -> None:
        """Start `session`'s timer, from the token the security interceptor accepted at open."""
        current = renewal.current.get()
        if current is not None:
            lifetime = _Lifetime(current)
            self._streams[session] = lifetime
            self._schedule(session, lifetime)

    def close(self, session: Session) -> None:
        lifetime = self._streams.pop(session, None)
        if lifetime is not None and lifetime.timer is not None:
            lifetime.timer.cancel()

    async def refresh(self, session: Session, message: pb.TokenRefresh) -> None:
        """Handle a TokenRefresh: acknowledge it, and move the timer when the token is accepted."""
        lifetime = self._streams.get(session)
        if lifetime is None:
            session.ack(KIND, pb.ACK_STATUS_ACCEPTED, "this stream has no token to refresh; nothing changed")
            return
        try:
            principal = lifetime.renewal.renew(message.token, session.worker_id)
        except RefreshRefused as exc:
            session.ack(KIND, pb.ACK_STATUS_REJECTED, f"token refresh refused: {exc}; the current token still applies")
            return
        self._schedule(session, lifetime)
        until = dt.datetime.fromtimestamp(principal.expires_at, dt.UTC).isoformat()
        session.ack(KIND, pb.ACK_STATUS_ACCEPTED, f"token accepted; it expires at {until}")

    def _schedule(self, session: Session, lifetime: _Lifetime) -> None:
        if lifetime.timer is not None:
            lifetime.timer.cancel()
        valid_until = lifetime.renewal.principal.valid_until
        if valid_until <= 0:
            return
        loop = asyncio.get_running_loop()
        lifetime.timer = loop.call_later(max(0.0, valid_until - time.time()), _expire, session)
