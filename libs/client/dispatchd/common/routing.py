"""Which worker capabilities run which job types.

A capability matches a job type equal to it or inside its dotted namespace: `email`
runs `email.send` and `email.digest.weekly`; `email.send` runs only `email.send`. What a
job type or capability may contain is `names.job_type`'s rule.
"""

from __future__ import annotations

from collections.abc import Iterable


def capability_matches(capability: str, job_type: str) -> bool:
    return job_type == capability or job_type.startswith(capability + ".")


def matching_job_types(capabilities: Iterable[str], job_types: Iterable[str]) -> set[str]:
    caps = list(capabilities)
    return {t for t in job_types if any(capability_matches(c, t) for c in caps)}
