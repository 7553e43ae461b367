"""The development login page: paste a JWT, kept in an HttpOnly, SameSite=Strict cookie.

Invariant: only without an auth proxy (DISPATCHD_DASHBOARD_TOKEN_HEADER unset); a token is kept
only after the control plane accepted it for one call, so a typo is said at once rather than
on the next page; the form is CSRF-protected like every action (no login CSRF).
"""

from __future__ import annotations

from aiohttp import web

from dispatchd.client import PermissionDenied, Unauthenticated
from dispatchd.dashboard import csrf, keys
from dispatchd.dashboard.callers import MAX_TOKEN_CHARS, TOKEN_COOKIE

routes = web.RouteTableDef()


def _enabled(request: web.Request) -> None:
    if not request.app[keys.SETTINGS].login_page:
        raise web.HTTPNotFound(text="sign-in is handled by the auth proxy in front of the dashboard")


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    _enabled(request)
    return request.app[keys.PAGES].render(request, "login.html", problem="")


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    _enabled(request)
    form = await request.post()
    token = "".join(str(form.get("token", "")).split())
    problem = ""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        problem = "that is not a JWT (three base64url parts separated by dots)"
    else:
        try:
            await request.app[keys.CLIENT].with_token(token).list_jobs(page_size=1)
        except Unauthenticated as exc:
            problem = f"the control plane refused this token: {exc.details}"
        except PermissionDenied:
            pass  # a valid token whose roles cannot list jobs: the pages will say what it may not do
    if problem:
        return request.app[keys.PAGES].render(request, "login.html", http_status=401, problem=problem)
    response = web.HTTPSeeOther("/jobs")
    csrf.set_cookie(response, request, TOKEN_COOKIE, token)
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login" if request.app[keys.SETTINGS].login_page else "/")
    response.del_cookie(TOKEN_COOKIE, path="/")
    raise response
