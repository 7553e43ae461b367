"""Which worker capabilities run which job types.

A capability matches a job type equal to it or inside its dotted namespace: `email`
runs `email.send` and `email.digest.weekly`; `email.send` runs only `email.send`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Lower-case dotted identifiers: "email", "email.send", "reports.daily-v2".
JOB_TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$")
MAX_JOB_TYPE_LENGTH = 128


def capability_matches(capability: str, job_type: str) -> bool:
    return job_type == capability or job_type.startswith(capability + ".")


def matching_job_types(capabilities: Iterable[str], job_types: Iterable[str]) -> set[str]:
    caps = list(capabilities)
    return {t for t in job_types if any(capability_matches(c, t) for c in caps)}


def is_valid_job_type(value: str) -> bool:
    return len(value) <= MAX_JOB_TYPE_LENGTH and JOB_TYPE_PATTERN.match(value) is not None
