"""The audit log: one JSON line per call on the `dispatchd.audit` logger (per stream: open, close).

`DISPATCHD_AUDIT_LEVEL` says which lines are written (`records`):
- `all` (the default): every call but health;
- `mutations`: calls that change work (`methods.is_mutating`: submit, cancel, redrive, worker
  streams) and every denied call;
- `denied`: only calls refused for who the caller is or what it may do: UNAUTHENTICATED,
  PERMISSION_DENIED, RESOURCE_EXHAUSTED (per-identity limits);
- `off`: none (APP_ENV=production refuses it: security/settings.guardrail).
The decision is made before a line is built, so a level that skips a call costs it nothing.

Fields: `event` (`call`, `stream.open`, `stream.close`), `method`, `subject`, `roles`,
`peer`, `client_cert` (the client certificate's identity, if any), `request_id`
(the caller's `x-request-id`, or a generated one), `code` (the gRPC status name), `latency_ms`,
and the `job_ids` / `worker_id` the call involved. `detail` carries the status message of
a refused or failed call. Health checks are not audited (probes would drown everything else).

The logger is separate from the service's own logs so it can be routed (or kept) on its own;
it is written with the same JSON formatter, through the process's log queue (so never by the
event loop) but never rate-limited: audit is a record, not a log. A line is handed to the
logger as an `AuditLine`, a record made without `Logger.info`'s search for the calling frame
(a line per call makes that search a noticeable share of a call's cost); what it writes is
the same.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from dispatchd.platform.config import AuditLevel
from dispatchd.platform.methods import is_mutating
from dispatchd.platform.security.tls import PeerCertificate
from dispatchd.platform.security.tokens import Principal

log = logging.getLogger("dispatchd.audit")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
MAX_JOB_IDS = 20
DENIED = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class AuditLine(logging.LogRecord):
    """One audit line as the `dispatchd.audit` logger's INFO record: only what varies is computed."""

    def __init__(self, message: str, fields: dict[str, object]) -> None:  # no super(): that is the cost
        self.__dict__.update(_LINE_CONSTANTS)
        now = time.time_ns()
        self.created = now / 1e9
        self.msecs = float((now % 1_000_000_000) // 1_000_000)
        self.relativeCreated = (now - _STARTED_NS) / 1e6
        self.msg = message
        self.fields = fields


_STARTED_NS = time.time_ns()
_LINE_CONSTANTS: dict[str, object] = {
    "name": log.name,
    "args": None,
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": __file__,
    "filename": os.path.basename(__file__),
    "module": __name__.rpartition(".")[2],
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": "write",
    "thread": None,
    "threadName": None,
    "processName": None,
    "process": None,
    "taskName": None,
}


def records(level: AuditLevel, method: str, code: grpc.StatusCode) -> bool:
    """Whether a line for `method` ending with `code` is written at `level`."""
    if level == "all":
        return True
    if level == "off":
        return False
    return code in DENIED or (level == "mutations" and is_mutating(method))


def request_id(supplied: str | None) -> str:
    """The caller's request id when it is sane, else a fresh one (never reject over it)."""
    if supplied and _REQUEST_ID.match(supplied):
        return supplied
    return uuid.uuid4().hex


def job_ids(message: Any) -> list[str]:
    """Job ids a request or response names: `job_id`, `job_ids`, `job.job_id`, `redriven[].job_id`."""
    if not isinstance(message, Message):
        return []
    found: list[str] = []
    fields = message.DESCRIPTOR.fields_by_name
    if "job_id" in fields and isinstance(getattr(message, "job_id", None), str):
        found.append(message.job_id)  # type: ignore[attr-defined]
    if "job_ids" in fields:
        found.extend(str(v) for v in message.job_ids)  # type: ignore[attr-defined]
    if "job" in fields and message.HasField("job"):
        found.append(message.job.job_id)  # type: ignore[attr-defined]
    if "redriven" in fields:
        found.extend(job.job_id for job in message.redriven)  # type: ignore[attr-defined]
    return [j for j in dict.fromkeys(found) if j][:MAX_JOB_IDS]


@dataclass
class AuditRecord:
    method: str
    peer: str
    request_id: str
    started: float = field(default_factory=time.monotonic)
    principal: Principal | None = None
    certificate: PeerCertificate | None = None
    job_ids: list[str] = field(default_factory=list)
    worker_id: str = ""
    level: AuditLevel = "all"

    def add_jobs(self, ids: Iterable[str]) -> None:
        for job_id in ids:
            if job_id and job_id not in self.job_ids and len(self.job_ids) < MAX_JOB_IDS:
                self.job_ids.append(job_id)

    def write(self, event: str, code: grpc.StatusCode, detail: str = "") -> None:
        if not records(self.level, self.method, code):
            return
        fields: dict[str, object] = {
            "event": event,
            "method": self.method,
            "subject": self.principal.subject if self.principal else None,
            "roles": sorted(self.principal.roles) if self.principal else [],
            "peer": self.peer,
            "client_cert": self.certificate.label if self.certificate else None,
            "request_id": self.request_id,
            "code": code.name,
            "latency_ms": round((time.monotonic() - self.started) * 1000, 3),
        }
        if self.job_ids:
            fields["job_ids"] = list(self.job_ids)
        if self.worker_id:
            fields["worker_id"] = self.worker_id
        if detail and code is not grpc.StatusCode.OK:
            fields["detail"] = detail[:512]
        if log.isEnabledFor(logging.INFO):
            log.handle(AuditLine(f"{event} {self.method} {code.name}", fields))


def is_audited(method: str, unaudited: Sequence[str]) -> bool:
    return not any(method.startswith(prefix) for prefix in unaudited)


def configure(stream: Any = None) -> None:
    """Give the audit logger its own JSON handler: its lines stay JSON whatever DISPATCHD_LOG_JSON says."""
    from dispatchd.common.log_queue import Lines
    from dispatchd.common.observability import JsonFormatter, route

    handler = Lines(stream)
    handler.setFormatter(JsonFormatter())
    log.setLevel(logging.INFO)
    route(log, handler, "audit records")
