"""Who is using the dashboard: the user's JWT (from the auth proxy's header or the login cookie).

Invariant: the token travels only in a header or an HttpOnly, SameSite=Strict cookie, never in
a URL, a page or a log line. Its claims are read here WITHOUT verifying the signature, and only
to decide which buttons to draw: the control plane verifies the token on every call and
refuses what the role table does not allow, so a forged claim can at most show a button whose
action then fails.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from aiohttp import web

from dispatchd.dashboard import keys
from dispatchd.dashboard.settings import DashboardSettings
from dispatchd.platform import methods
from dispatchd.platform.security.roles import roles_from_claims

TOKEN_COOKIE = "dispatchd_token"
# Cookies longer than this are not tokens anyone issues; refusing them keeps headers small.
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True)
class Caller:
    """The browser user: their token (None: none given) and, if it names them, subject and roles."""

    token: str | None
    subject: str = ""
    roles: frozenset[str] | None = None  # None: unknown (no token; security may be off)

    def may(self, method: str) -> bool:
        """Whether the role table lets this caller call JobService `method` (shown as a button)."""
        if self.roles is None:
            return True  # without a token, the control plane alone decides (security off: everyone)
        return methods.rule_for(f"/{methods.JOB_SERVICE}/{method}").scope_for(self.roles) is not None


def _claims(token: str) -> dict[str, object]:
    """The payload of a JWT, unverified; {} when it is not one."""
    try:
        payload = token.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def from_token(token: str | None) -> Caller:
    if not token:
        return Caller(None)
    claims = _claims(token)
    subject = claims.get("sub")
    try:
        roles = roles_from_claims(claims)
    except (TypeError, ValueError):
        roles = frozenset()
    return Caller(token, subject if isinstance(subject, str) else "", roles)


def token_of(request: web.Request, settings: DashboardSettings) -> str | None:
    """The proxy's header when one is configured (then nothing else), else the login cookie."""
    if settings.token_header:
        value = request.headers.get(settings.token_header, "").strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer":
            value = rest.strip()
    else:
        value = request.cookies.get(TOKEN_COOKIE, "").strip()
    return value if 0 < len(value) <= MAX_TOKEN_CHARS else None


def caller_of(request: web.Request) -> Caller:
    caller = request.get("caller")
    assert isinstance(caller, Caller), "the callers middleware runs first"
    return caller


@web.middleware
async def callers_middleware(request: web.Request, handler: keys.Handler) -> web.StreamResponse:
    request["caller"] = from_token(token_of(request, request.app[keys.SETTINGS]))
    return await handler(request)
