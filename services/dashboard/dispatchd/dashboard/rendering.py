"""Server-rendered pages: one Jinja2 environment, autoescaped, with the filters the templates share.

Invariant: every page gets the caller (what its buttons may offer), the CSRF token its forms
carry and the navigation; values reach HTML only through autoescaping (payloads and errors are
untrusted text), and every response carries a Content-Security-Policy allowing only this
origin's scripts and styles, so nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jinja2
from aiohttp import web

from dispatchd.dashboard import csrf, keys
from dispatchd.dashboard.callers import caller_of

PREVIEW_CHARS = 4000
# The sections in the navigation bar: (path, title, the JobService method the page needs), shown
# to callers whose roles allow that method.
NAVIGATION: list[tuple[str, str, str]] = [
    ("/", "Overview", "ListJobs"),
    ("/jobs", "Jobs", "ListJobs"),
    ("/dead-letters", "Dead letters", "ListDeadLetters"),
    ("/workflows", "Workflows", "ListWorkflowRuns"),
    ("/schedules", "Schedules", "ListSchedules"),
    ("/workers", "Workers", "ListWorkers"),
    ("/queues", "Queues", "GetQueueStats"),
    ("/status", "Status", "GetClusterStatus"),
]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on its own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """The time between two instants, as a person reads it ("1.24 s", "3 min 05 s")."""
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def preview(data: bytes) -> str:
    """A payload or result as text: indented JSON when it is JSON, else UTF-8 (or its size), cut short."""
    if not data:
        return ""
    try:
        text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return f"<{len(data)} bytes of binary data>"
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + f"\n… ({len(text)} characters)"


def status_name(value: Any) -> str:
    """JobStatus.DEAD_LETTERED -> "dead_lettered" (CSS classes and filters use these)."""
    return str(getattr(value, "name", value)).lower()


class Pages:
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("dispatchd.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, preview=preview, status=status_name)
        self.env.globals.update(took=took, navigation=NAVIGATION)

    def render(self, request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
        settings = request.app[keys.SETTINGS]
        html = self.env.get_template(template).render(
            caller=caller_of(request),
            csrf_token=csrf.token_of(request),
            login_page=settings.login_page,
            path=request.path,
            **context,
        )
        return web.Response(text=html, content_type="text/html", status=http_status)


@web.middleware
async def headers_middleware(request: web.Request, handler: keys.Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response
