"""The fields of a workflow definition document, shared by the server and the client.

Invariant: the one list of what a definition (YAML, or a client's mapping) may hold. The
control plane refuses anything else naming the step (`workflow_definitions`), and the client
refuses it before a call, since the wire message has no field to carry it.
"""

from __future__ import annotations

DEFINITION_FIELDS = frozenset({"name", "steps", "version"})
STEP_FIELDS = frozenset(
    {
        "id",
        "job_type",
        "payload",
        "depends_on",
        "continue_on_failure",
        "retry",
        "execution_timeout_ms",
        "priority",
        "metadata",
    }
)
RETRY_FIELDS = frozenset({"max_attempts", "initial_backoff_ms", "max_backoff_ms"})
