"""CSRF protection of every action: a synchronizer token bound to the browser's session cookie.

Invariant: a request that changes anything (any method but GET/HEAD/OPTIONS) is refused with
403 unless its form field `csrf_token` (or header X-CSRF-Token) equals HMAC(key, session), the
session being the random HttpOnly, SameSite=Strict cookie this module sets; and, when the
browser sends an Origin, unless that origin is this host. Another site can neither read the
token nor send the cookie, so it cannot forge an action; the token never appears in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from aiohttp import web
from yarl import URL

from dispatchd.dashboard import keys

log = logging.getLogger(__name__)

SESSION_COOKIE = "dispatchd_session"
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfGuard:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path | None) -> CsrfGuard:
        if path is None:
            log.warning("no DISPATCHD_DASHBOARD_SECRET_FILE: CSRF tokens are valid in this process only")
            return cls(secrets.token_bytes(32))
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"DISPATCHD_DASHBOARD_SECRET_FILE: cannot read {path}: {exc.strerror}") from None
        if len(key) < 32:
            raise ValueError(f"DISPATCHD_DASHBOARD_SECRET_FILE: {path} holds {len(key)} bytes; at least 32")
        return cls(key)

    def token_for(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def valid(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token_for(session), token)


def session_of(request: web.Request) -> str:
    session = request.get("session")
    assert isinstance(session, str), "the csrf middleware runs first"
    return session


def token_of(request: web.Request) -> str:
    """The CSRF token every form on a page carries."""
    return request.app[keys.CSRF].token_for(session_of(request))


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    """A cookie no script can read and no other site can make the browser send."""
    secure = request.app[keys.SETTINGS].cookie_secure
    response.set_cookie(name, value, httponly=True, samesite="Strict", secure=secure, path="/")


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return URL(origin).host_port_subcomponent == URL(f"//{request.host}").host_port_subcomponent


@web.middleware
async def csrf_middleware(request: web.Request, handler: keys.Handler) -> web.StreamResponse:
    guard = request.app[keys.CSRF]
    session = request.cookies.get(SESSION_COOKIE)
    if request.method not in SAFE_METHODS:
        form = await request.post() if request.content_type in _FORMS else {}
        sent = request.headers.get(HEADER) or form.get(FIELD)
        if not _same_origin(request) or not guard.valid(session, sent if isinstance(sent, str) else None):
            raise web.HTTPForbidden(text="refused: this action's CSRF token is missing or wrong; reload the page")
    fresh = not session
    request["session"] = session or secrets.token_urlsafe(32)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a redirect or an error page gets the cookie too
        if fresh:
            set_cookie(exc, request, SESSION_COOKIE, session_of(request))
        raise
    if fresh and not response.prepared:  # an event stream's headers are gone already
        set_cookie(response, request, SESSION_COOKIE, session_of(request))
    return response


_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
