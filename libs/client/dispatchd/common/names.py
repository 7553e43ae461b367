"""What names may contain: job types and capabilities, and the other names that reach logs.

Invariant: this module holds the only copy of each rule. The control plane (SubmitJob), the
worker gateway (registration), the worker SDK (`worker.handler`) and dispatchctl all call
it, so a name one of them accepts is accepted by every other one; it raises `InvalidName`
(a ValueError) whose message names the field and the rule, and quotes the value with
`repr`, so a control character never reaches a log line or a terminal as is.

Job types and capabilities are one grammar (a capability is a job type or a namespace of
them, see `routing`): 1 to 128 characters of lower-case dot-separated segments of
`[a-z0-9_-]`, each starting with a letter or digit.
"""

from __future__ import annotations

import re
import unicodedata

MAX_JOB_TYPE_CHARS = 128
JOB_TYPE_RULE = (
    f"at most {MAX_JOB_TYPE_CHARS} characters of lower-case dot-separated segments of [a-z0-9_-], "
    "each non-empty and starting with a letter or digit, e.g. 'email.send'"
)
# fullmatch, never `$`: `$` also matches before a trailing newline ("probe.never\n").
_JOB_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
PREVIEW_CHARS = 64


class InvalidName(ValueError):
    """A name that breaks its rule; the message says which field, which rule and what was sent."""


def preview(value: str, limit: int = PREVIEW_CHARS) -> str:
    """`value` quoted for a message: repr (control characters escaped), cut after `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def job_type(value: str, field: str = "job type") -> str:
    """`value` if it is a valid job type (or capability); InvalidName otherwise."""
    if len(value) > MAX_JOB_TYPE_CHARS or _JOB_TYPE.fullmatch(value) is None:
        raise InvalidName(f"{field} {preview(value)} is not a valid job type ({JOB_TYPE_RULE})")
    return value


def has_control_characters(value: str) -> bool:
    """True if `value` holds a control character (C0, DEL, C1) or a line/paragraph separator."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)


def printable(value: str, field: str) -> str:
    """`value` if it holds no control characters; for names (keys, ids) that end up in logs."""
    if has_control_characters(value):
        raise InvalidName(f"{field} {preview(value)} must not contain control characters")
    return value
