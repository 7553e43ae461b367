"""A worker stream's credential after the stream opened: fresh tokens checked as the first was.

The security interceptor authenticates a `WorkerService.Connect` stream once, when it opens,
and leaves a `Renewal` in `current` for the gateway. A fresh token presented later on the
stream goes through `Renewal.renew`, which runs the interceptor's own checks (the same
verifier, the same role table, the same worker-identity rule against the registered worker
id and the client certificate) and in addition requires the stream's subject: a stream never
changes identity. A refused token changes nothing; the stream keeps its current principal
and, with it, its current expiry.

Without authentication there is no Renewal (None): such streams carry no token, so they
have no expiry either.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from dispatchd.platform.security.tokens import Principal


class RefreshRefused(Exception):
    """The fresh token is not acceptable for this stream; the message says why (safe to return)."""


# (token, registered worker id) -> the token's principal, or RefreshRefused.
Check = Callable[[str, str], Principal]


@dataclass(eq=False)
class Renewal:
    principal: Principal
    check: Check

    def renew(self, token: str, worker_id: str) -> Principal:
        """The fresh token's principal, now the stream's; RefreshRefused leaves the stream's as it was."""
        principal = self.check(token, worker_id)
        if principal.subject != self.principal.subject:
            raise RefreshRefused(
                f"the fresh token is for subject {principal.subject!r}; this stream's is {self.principal.subject!r}"
            )
        self.principal = principal
        return principal


current: contextvars.ContextVar[Renewal | None] = contextvars.ContextVar("dispatchd_renewal", default=None)
