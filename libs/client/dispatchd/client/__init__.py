"""dispatchd's Python client for applications: submit jobs and follow them.

    from dispatchd.client import Client

    with Client("127.0.0.1:50051") as client:
        job = client.submit("email.send", {"to": "a@example.com"}).job
        done = client.wait(job.job_id)
        print(done.status, done.result_json())

`client.submit_many([{"job_type": "email.send", "payload": {...}}, ...])` submits many jobs
with BatchSubmitJobs, one outcome per job. `AsyncClient` has the same methods for asyncio
code. Failures raise a `DispatchdError` subclass; `ClientSecurity` holds the token, token
file and TLS files (default: the DISPATCHD_* environment, as for dispatchctl). Everything
public is listed in `__all__`; the `_`-prefixed modules are private.
"""

from dispatchd.client._async import BATCH_LIMIT, DEFAULT_TARGET, TARGET_ENV, AsyncClient
from dispatchd.client._errors import (
    AlreadyExists,
    DeadlineExceeded,
    DispatchdError,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from dispatchd.client._models import (
    BatchOutcome,
    DeadLetter,
    Execution,
    ExecutionStatus,
    Job,
    JobStatus,
    Page,
    Redrive,
    RetryPolicy,
    Skipped,
    Submission,
)
from dispatchd.client._observe_models import (
    ClusterStatus,
    JobEvent,
    JobEventKind,
    LogLine,
    LogPage,
    QueueStats,
    Worker,
    WorkerStatus,
)
from dispatchd.client._requests import JobSpec
from dispatchd.client._retry import Retries
from dispatchd.client._sync import Client
from dispatchd.common.security import ClientSecurity, CredentialsError

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_TARGET",
    "TARGET_ENV",
    "AlreadyExists",
    "AsyncClient",
    "BatchOutcome",
    "Client",
    "ClientSecurity",
    "ClusterStatus",
    "CredentialsError",
    "DeadLetter",
    "DeadlineExceeded",
    "DispatchdError",
    "Execution",
    "ExecutionStatus",
    "FailedPrecondition",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "LogLine",
    "LogPage",
    "Page",
    "PermissionDenied",
    "QueueStats",
    "Redrive",
    "ResourceExhausted",
    "Retries",
    "RetryPolicy",
    "Skipped",
    "Submission",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "WorkerStatus",
]
