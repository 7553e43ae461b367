"""The control-plane client of one browser request: the shared channel, the caller's token."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from dispatchd.client import AsyncClient
from dispatchd.dashboard import keys
from dispatchd.dashboard.callers import caller_of


def client_for(request: web.Request) -> AsyncClient:
    return request.app[keys.CLIENT].with_token(caller_of(request).token)


def see_other(location: str, **params: str) -> web.HTTPSeeOther:
    """A redirect after an action (POST-redirect-GET), with a notice for the next page."""
    return web.HTTPSeeOther(str(URL(location).update_query({k: v for k, v in params.items() if v})))
