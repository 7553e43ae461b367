"""What a refused or failed control-plane call becomes in the browser.

Invariant: the control plane's answer is shown as it is (its status and message, escaped), with
the matching HTTP status: UNAUTHENTICATED sends the user to the login page (or says 401 behind
an auth proxy), PERMISSION_DENIED is 403, NOT_FOUND 404, INVALID_ARGUMENT 400, and a control
plane that cannot be reached is 503, never a traceback.
"""

from __future__ import annotations

import logging

from aiohttp import web

from dispatchd.client import (
    DeadlineExceeded,
    DispatchdError,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from dispatchd.dashboard import keys

log = logging.getLogger(__name__)

STATUS_OF: list[tuple[type[DispatchdError], int]] = [
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (JobNotFound, 404),
    (InvalidArgument, 400),
    (FailedPrecondition, 409),
    (Unavailable, 503),
    (DeadlineExceeded, 504),
]


def http_status(error: DispatchdError) -> int:
    return next((status for kind, status in STATUS_OF if isinstance(error, kind)), 502)


@web.middleware
async def errors_middleware(request: web.Request, handler: keys.Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DispatchdError as error:
        status = http_status(error)
        if status == 401 and request.app[keys.SETTINGS].login_page and request.method == "GET":
            raise web.HTTPSeeOther("/login") from None
        if status >= 500:
            log.warning("control plane call failed: %s %s: %s", request.method, request.path, error.code)
        pages = request.app[keys.PAGES]
        return pages.render(request, "error.html", http_status=status, code=error.code, message=error.details)
