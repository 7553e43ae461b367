"""What the security interceptor decided about the current call, for handlers that need it.

The interceptor sets `current` (a context variable) before the handler runs; handlers read
it through `owner_filter` / `submitter`. With authentication off there is no principal and
every call may see everything, exactly as before.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from dispatchd.platform.errors import NotFound
from dispatchd.platform.security.roles import Scope
from dispatchd.platform.security.tokens import Principal


@dataclass(frozen=True, slots=True)
class Access:
    principal: Principal | None
    scope: Scope
    request_id: str = ""


ANONYMOUS = Access(principal=None, scope=Scope.ALL)

current: contextvars.ContextVar[Access] = contextvars.ContextVar("dispatchd_access", default=ANONYMOUS)


def submitter() -> str | None:
    """The subject to record as a new job's submitter (None without authentication)."""
    principal = current.get().principal
    return principal.subject if principal is not None else None


def owner_filter() -> str | None:
    """The only submitter whose jobs this call may see, or None when it may see every job."""
    access = current.get()
    if access.scope is Scope.ALL or access.principal is None:
        return None
    return access.principal.subject


def check_owner(job_id: object, submitted_by: str | None) -> None:
    """NOT_FOUND unless the caller may see a job submitted by `submitted_by`.

    Not PERMISSION_DENIED: a submitter must not learn which job ids exist.
    """
    owner = owner_filter()
    if owner is not None and submitted_by != owner:
        raise NotFound(f"job {job_id} not found")
