"""The authorization table: which roles may call which method. Defined here, once.

The interceptor enforces it for every service; the README's table is generated from it
(`markdown_table`) and a test keeps the two equal. A method missing from the table is
refused to everyone (fail closed), and a test checks that every method a service serves is
in it.

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
    Role.SUBMITTER: "submits jobs and reads the jobs it submitted",
    Role.VIEWER: "reads every job, execution and dead letter",
    Role.OPERATOR: "everything on jobs: submit, read, cancel, list and redrive dead letters",
    Role.ADMIN: "every JobService method, and reflection when it is enabled; not a worker",
    Role.WORKER: "`WorkerService.Connect` only, under the worker id equal to its token's `sub`",
    Role.SERVICE: "`WorkerService.Connect` under any worker id (a trusted worker pool; grant sparingly)",
}


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


def _grant(*roles: Role, own: Iterable[Role] = ()) -> Rule:
    grants = {role: Scope.ALL for role in roles}
    grants.update({role: Scope.OWN for role in own})
    return Rule(grants)


JOB_SERVICE = "dispatchd.v1.JobService"
WORKER_SERVICE = "dispatchd.v1.WorkerService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"

_SUBMIT = _grant(Role.SUBMITTER, Role.OPERATOR, Role.ADMIN)
_READ_JOBS = _grant(Role.VIEWER, Role.OPERATOR, Role.ADMIN, own=[Role.SUBMITTER])
_READ_ALL = _grant(Role.VIEWER, Role.OPERATOR, Role.ADMIN)
_OPERATE = _grant(Role.OPERATOR, Role.ADMIN)
_WORK = _grant(Role.WORKER, Role.SERVICE)
_PUBLIC = Rule({}, public=True)

# Keys are gRPC full method names, exactly as they arrive on the wire.
TABLE: Mapping[str, Rule] = {
    f"/{JOB_SERVICE}/SubmitJob": _SUBMIT,
    f"/{JOB_SERVICE}/GetJob": _READ_JOBS,
    f"/{JOB_SERVICE}/ListJobs": _READ_JOBS,
    f"/{JOB_SERVICE}/ListExecutions": _READ_JOBS,
    f"/{JOB_SERVICE}/WaitJob": _READ_JOBS,
    f"/{JOB_SERVICE}/CancelJob": _OPERATE,
    f"/{JOB_SERVICE}/ListDeadLetters": _READ_ALL,
    f"/{JOB_SERVICE}/RedriveJobs": _OPERATE,
    f"/{WORKER_SERVICE}/Connect": _WORK,
    f"/{HEALTH_SERVICE}/Check": _PUBLIC,
    f"/{HEALTH_SERVICE}/Watch": _PUBLIC,
    f"/{HEALTH_SERVICE}/List": _PUBLIC,
    # Registered only with DISPATCHD_REFLECTION_ENABLED; then admin-only.
    f"/{REFLECTION_SERVICE}/ServerReflectionInfo": _grant(Role.ADMIN),
}

# What an unknown method gets: nobody may call it until it is added to the table.
DENY_ALL = Rule({})


def rule_for(method: str) -> Rule:
    return TABLE.get(method, DENY_ALL)


def roles_from_claims(claims: Mapping[str, object]) -> frozenset[str]:
    """Role names from the `roles` claim (list or string) and the `scope` claim.

    Scope entries may carry a `dispatchd:` or `dispatchd.` prefix (`scope: "dispatchd:viewer"`),
    so one token can hold scopes for several audiences. Unknown names are kept (and grant
    nothing), so the audit log shows what the token claimed.
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
            if isinstance(item, str) and item:
                name = item.strip()
                for prefix in ("dispatchd:", "dispatchd."):
                    if name.startswith(prefix):
                        name = name[len(prefix) :]
                if name:
                    names.add(name)
    return frozenset(names)


def markdown_table() -> str:
    """The README's authorization table (a test keeps README.md equal to this)."""
    roles = list(Role)
    header = "| Method | " + " | ".join(f"`{r.value}`" for r in roles) + " |"
    lines = [header, "| --- |" + " :---: |" * len(roles)]
    for method, rule in TABLE.items():
        if rule.public:
            cells = ["public"] * len(roles)
        else:
            cells = []
            for role in roles:
                scope = rule.grants.get(role)
                cells.append("" if scope is None else ("own" if scope is Scope.OWN else "yes"))
        lines.append(f"| `{method.lstrip('/')}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_roles() -> str:
    return "\n".join(f"- `{role.value}`: {ROLE_DESCRIPTIONS[role]}." for role in Role)
