"""Log correlation: the ids that let a log line be joined with its job and its trace.

Invariant: the ids are read on the thread that logs (by `CorrelationFilter`, which runs in the
log queue's Inlet before the record is queued), never on the writer thread, where neither the
context variable nor the current span would be the caller's. A record gets `trace_id` and
`span_id` (hex, as OTLP backends show them) only while tracing is on and a span is current, or
a server call whose trace is not recorded passes its context on (`tracing.begin`: that
context's ids, so the line still joins the job's `trace_id`),
and `job_id` / `execution_id` only inside `bound(...)`; otherwise it gets nothing, so a line
outside a job looks exactly as before.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token

from opentelemetry import trace

from dispatchd.common import tracing

ATTRIBUTE = "correlation"

_ids: ContextVar[dict[str, str] | None] = ContextVar("dispatchd_job_ids", default=None)


class bound:  # noqa: N801 - used like a function: `with bound(job_id=...):`
    """Log lines written inside carry these ids (empty ones are left out); nests, innermost wins.

    A class, not a generator context manager: it runs for every message of every job.
    """

    __slots__ = ("_ids", "_token")

    def __init__(self, job_id: str = "", execution_id: str = "") -> None:
        ids = dict(_ids.get() or {})
        if job_id:
            ids["job_id"] = job_id
        if execution_id:
            ids["execution_id"] = execution_id
        self._ids = ids
        self._token: Token[dict[str, str] | None] | None = None

    def __enter__(self) -> None:
        self._token = _ids.set(self._ids)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ids.reset(self._token)
            self._token = None


def current() -> dict[str, str]:
    """The ids a line logged here and now would carry."""
    fields = dict(_ids.get() or {})
    if tracing.enabled():
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            fields["trace_id"] = trace.format_trace_id(context.trace_id)
            fields["span_id"] = trace.format_span_id(context.span_id)
        elif (passed := tracing.passed_ids()) is not None:
            fields["trace_id"], fields["span_id"] = passed
    return fields


class CorrelationFilter(logging.Filter):
    """Stamps each record with `current()` (as `record.correlation`); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = current()
        if fields:
            setattr(record, ATTRIBUTE, fields)
        return True
