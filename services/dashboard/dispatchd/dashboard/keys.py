"""Typed keys of what the dashboard's aiohttp application holds (settings, the client, templates, CSRF)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from dispatchd.client import AsyncClient
from dispatchd.dashboard.settings import DashboardSettings

if TYPE_CHECKING:
    from dispatchd.dashboard.csrf import CsrfGuard
    from dispatchd.dashboard.rendering import Pages

SETTINGS = web.AppKey("settings", DashboardSettings)
CLIENT = web.AppKey("client", AsyncClient)
PAGES: web.AppKey[Pages] = web.AppKey("pages")
CSRF: web.AppKey[CsrfGuard] = web.AppKey("csrf")

# What a middleware calls next (aiohttp's own alias is not callable for mypy).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
