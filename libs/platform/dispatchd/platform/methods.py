"""Every RPC the services serve, defined once: its service, whether it changes work, who may call it.

Service names come from the generated descriptors. Two edges read this table: the security
interceptor (`rule_for`: which roles may call a method) and the passive-region interceptor
(`is_mutating`: which calls a read-only region refuses). The README's authorization table
is generated from it (`markdown_table`) and a test keeps the two equal; another checks that
every method a service serves is in it. A method missing from it is refused to everyone and
counts as mutating: both fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from dispatchd.platform.security.roles import Role, Rule, Scope, grant
from dispatchd.v1 import job_service_pb2, worker_service_pb2

JOB_SERVICE: str = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
WORKER_SERVICE: str = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE: str = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    mutates: bool  # changes work: refused in a passive region
    rule: Rule  # who may call it

    @property
    def path(self) -> str:
        """The full method name exactly as it arrives on the wire."""
        return f"/{self.service}/{self.name}"


_SUBMIT = grant(Role.SUBMITTER, Role.OPERATOR, Role.ADMIN)
_READ_JOBS = grant(Role.VIEWER, Role.OPERATOR, Role.ADMIN, own=[Role.SUBMITTER])
_READ_ALL = grant(Role.VIEWER, Role.OPERATOR, Role.ADMIN)
_OPERATE = grant(Role.OPERATOR, Role.ADMIN)
_WORK = grant(Role.WORKER, Role.SERVICE)
_PUBLIC = Rule({}, public=True)

METHODS: tuple[Method, ...] = (
    Method(JOB_SERVICE, "SubmitJob", mutates=True, rule=_SUBMIT),
    Method(JOB_SERVICE, "BatchSubmitJobs", mutates=True, rule=_SUBMIT),
    Method(JOB_SERVICE, "GetJob", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "ListJobs", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "ListExecutions", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "WaitJob", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "CancelJob", mutates=True, rule=_OPERATE),
    Method(JOB_SERVICE, "ListDeadLetters", mutates=False, rule=_READ_ALL),
    Method(JOB_SERVICE, "RedriveJobs", mutates=True, rule=_OPERATE),
    # The observe RPCs (observe.proto): logs are a job's, the rest describe the whole cluster.
    Method(JOB_SERVICE, "ListLogs", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "FollowLogs", mutates=False, rule=_READ_JOBS),
    Method(JOB_SERVICE, "ListWorkers", mutates=False, rule=_READ_ALL),
    Method(JOB_SERVICE, "GetQueueStats", mutates=False, rule=_READ_ALL),
    Method(JOB_SERVICE, "GetClusterStatus", mutates=False, rule=_READ_ALL),
    Method(JOB_SERVICE, "WatchJobs", mutates=False, rule=_READ_ALL),
    # Every message on a worker stream (registration, started, results) changes work.
    Method(WORKER_SERVICE, "Connect", mutates=True, rule=_WORK),
    Method(HEALTH_SERVICE, "Check", mutates=False, rule=_PUBLIC),
    Method(HEALTH_SERVICE, "Watch", mutates=False, rule=_PUBLIC),
    Method(HEALTH_SERVICE, "List", mutates=False, rule=_PUBLIC),
    # Registered only with DISPATCHD_REFLECTION_ENABLED; then admin-only.
    Method(REFLECTION_SERVICE, "ServerReflectionInfo", mutates=False, rule=grant(Role.ADMIN)),
)

BY_PATH: Mapping[str, Method] = {method.path: method for method in METHODS}
TABLE: Mapping[str, Rule] = {method.path: method.rule for method in METHODS}

# What an unknown method gets: nobody may call it until it is added to the table.
DENY_ALL = Rule({})


def rule_for(path: str) -> Rule:
    return TABLE.get(path, DENY_ALL)


def is_mutating(path: str) -> bool:
    """Whether `/package.Service/Method` may change work; an unknown method is assumed to."""
    method = BY_PATH.get(path)
    return method is None or method.mutates


def markdown_table() -> str:
    """The README's authorization table (a test keeps README.md equal to this)."""
    roles = list(Role)
    header = "| Method | " + " | ".join(f"`{r.value}`" for r in roles) + " |"
    lines = [header, "| --- |" + " :---: |" * len(roles)]
    for path, rule in TABLE.items():
        if rule.public:
            cells = ["public"] * len(roles)
        else:
            cells = []
            for role in roles:
                scope = rule.grants.get(role)
                cells.append("" if scope is None else ("own" if scope is Scope.OWN else "yes"))
        lines.append(f"| `{path.lstrip('/')}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
