"""The roles a token may hold, and what a grant of them means (`Rule`).

Which roles may call which method is a column of the one method table,
`dispatchd.platform.methods`; the interceptor enforces it for every service.

Scopes: `ALL` lets the role act on every job; `OWN` restricts it to jobs its subject
submitted (the control plane applies that filter; others' jobs read as NOT_FOUND).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Role(enum.StrEnum):
    SUBMITTER = "submitter"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    WORKER = "worker"
    SERVICE = "service"


ROLE_DESCRIPTIONS: Mapping[Role, str] = {
    Role.SUBMITTER: "submits jobs and reads the jobs it submitted (and their logs)",
    Role.VIEWER: (
        "reads every job, execution, log and dead letter, the workers, queues and cluster status; watches job events"
    ),
    Role.OPERATOR: "everything on jobs: submit, read, cancel, list and redrive dead letters",
    Role.ADMIN: "every JobService method, and reflection when it is enabled; not a worker",
    Role.WORKER: "`WorkerService.Connect` only, under the worker id equal to its token's `sub`",
    Role.SERVICE: "`WorkerService.Connect` under any worker id (a trusted worker pool; grant sparingly)",
}


# An audience prefix a role entry may carry; at most one is removed.
ROLE_PREFIXES = ("dispatchd:", "dispatchd.")


class Scope(enum.IntEnum):
    """How much a role may see through a method; higher includes lower."""

    OWN = 1
    ALL = 2


@dataclass(frozen=True, slots=True)
class Rule:
    grants: Mapping[Role, Scope]
    public: bool = False

    def scope_for(self, roles: Iterable[str]) -> Scope | None:
        """The widest scope any of `roles` grants, or None when none may call the method."""
        best: Scope | None = None
        for name in roles:
            try:
                scope = self.grants.get(Role(name))
            except ValueError:
                continue
            if scope is not None and (best is None or scope > best):
                best = scope
        return best

    @property
    def allowed(self) -> list[Role]:
        return [role for role in Role if role in self.grants]


def grant(*roles: Role, own: Iterable[Role] = ()) -> Rule:
    """A rule letting `roles` act on every job and the `own` roles on the jobs they submitted."""
    grants = {role: Scope.ALL for role in roles}
    grants.update({role: Scope.OWN for role in own})
    return Rule(grants)


def roles_from_claims(claims: Mapping[str, object]) -> frozenset[str]:
    """Role names from the `roles`, `scope` and `scp` claims (types checked by `claims.type_problem`).

    Each is a list of names or one string of names separated by spaces (or commas). An entry
    may carry one `dispatchd:` or `dispatchd.` prefix (`scope: "dispatchd:viewer"`), so one
    token can hold scopes for several audiences; the prefix is removed once, so
    `dispatchd:dispatchd.admin` is the unknown role `dispatchd.admin`, not `admin`. Unknown
    names are kept (and grant nothing), so the audit log shows what the token claimed.
    """
    names: set[str] = set()
    for claim in ("roles", "scope", "scp"):
        value = claims.get(claim)
        items: Iterable[object]
        if isinstance(value, str):
            items = value.replace(",", " ").split()
        elif isinstance(value, list):
            items = value
        else:
            continue
        for item in items:
            if isinstance(item, str) and item.strip():
                names.add(_role_name(item.strip()))
    return frozenset(names)


def _role_name(entry: str) -> str:
    for prefix in ROLE_PREFIXES:
        if entry.startswith(prefix) and len(entry) > len(prefix):
            return entry[len(prefix) :]
    return entry


def markdown_roles() -> str:
    return "\n".join(f"- `{role.value}`: {ROLE_DESCRIPTIONS[role]}." for role in Role)
