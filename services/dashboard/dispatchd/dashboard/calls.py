"""The control-plane client of one browser request: the shared channel, the caller's token."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from dispatchd.client import AsyncClient
from dispatchd.dashboard import keys
from dispatchd.dashboard.callers import caller_of


def client_for(request: web.Request) -> AsyncClient:
    return request.app[keys.CLIENT].with_token(caller_of(request).token)


def local_page(value: object, default: str) -> str:
    """A form's page to return to, if it is a path on this site (never another site), else `default`."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    return value


def see_other(location: str, **params: str) -> web.HTTPSeeOther:
    """A redirect after an action (POST-redirect-GET), with a notice for the next page."""
    return web.HTTPSeeOther(str(URL(location).update_query({k: v for k, v in params.items() if v})))
