"""The chaos run's workload: a job mix, and a JobService client that rides out restarts.

Every submit carries an idempotency key and is retried with the same key on transient
errors (UNAVAILABLE while the control plane restarts, DEADLINE_EXCEEDED when its reply was
lost), so a retry can never create a second job; the run later checks it did not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2

from dispatchd.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc

CALL_TIMEOUT = 5.0
GIVE_UP_AFTER = 120.0
RETRY_PAUSE = 0.2
# Answers that say what the server decided: retrying would not change them.
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    # Reconnect quickly after a restart instead of gRPC's default backoff of up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True, slots=True)
class JobSpec:
    index: int
    key: str
    job_type: str
    payload: bytes
    priority: int
    max_attempts: int
    # Attempts the handler itself fails on purpose (all of them for builtin.fail).
    planned_failures: int


def make_workload(run_id: str, count: int, rng: random.Random, max_sleep: float) -> list[JobSpec]:
    """Mostly quick successes, some slow handlers, flaky jobs that succeed on a retry and
    jobs that always fail (dead-lettered after two attempts)."""
    specs = []
    kinds = rng.choices(["echo", "sleep", "flaky", "fail"], weights=[60, 15, 15, 10], k=count)
    for i, kind in enumerate(kinds):
        key = f"chaos-{run_id}-{i:06d}"
        priority = rng.choice([0, 0, 0, 1, 5])
        if kind == "echo":
            spec = JobSpec(i, key, "builtin.echo", f"echo {i}".encode(), priority, 6, 0)
        elif kind == "sleep":
            seconds = round(rng.uniform(0.1, max_sleep), 2)
            spec = JobSpec(i, key, "builtin.sleep", json.dumps({"seconds": seconds}).encode(), priority, 6, 0)
        elif kind == "flaky":
            planned = rng.choice([1, 2])
            payload = json.dumps({"fail_attempts": planned}).encode()
            spec = JobSpec(i, key, "builtin.flaky", payload, priority, planned + 5, planned)
        else:
            spec = JobSpec(i, key, "builtin.fail", b"", priority, 2, 2)
        specs.append(spec)
    return specs


def millis(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def submit_request(spec: JobSpec) -> job_service_pb2.SubmitJobRequest:
    policy = common_pb2.RetryPolicy(max_attempts=spec.max_attempts, initial_backoff=millis(50), max_backoff=millis(500))
    return job_service_pb2.SubmitJobRequest(
        job_type=spec.job_type,
        payload=spec.payload,
        priority=spec.priority,
        idempotency_key=spec.key,
        retry_policy=policy,
    )


@dataclass(frozen=True, slots=True)
class Cancelled:
    job_id: str
    finished_at: dt.datetime


@dataclass
class Receipts:
    """What the clients were told: the truth the run checks Postgres against."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    unacknowledged: list[str] = field(default_factory=list)  # keys we gave up on
    deduplicated: int = 0  # retries answered with the job an earlier attempt created
    conflicts: list[str] = field(default_factory=list)  # a retry refused: must never happen
    cancelled: dict[str, Cancelled] = field(default_factory=dict)  # job id -> what CancelJob answered
    cancel_outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "Rpc:CODE" -> count


class Client:
    def __init__(self, target: str, receipts: Receipts) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.receipts = receipts

    async def close(self) -> None:
        await self.channel.close(None)

    async def submit(self, spec: JobSpec) -> None:
        request = submit_request(spec)
        deadline = time.monotonic() + GIVE_UP_AFTER
        first = True
        while True:
            try:
                reply = await self.stub.SubmitJob(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                self.receipts.errors[f"SubmitJob:{exc.code().name}"] += 1
                if exc.code() in FINAL_CODES:
                    self.receipts.conflicts.append(f"{spec.key}: {exc.code().name} {exc.details()}")
                    return
                if time.monotonic() > deadline:
                    self.receipts.unacknowledged.append(spec.key)
                    return
                first = False
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if reply.deduplicated:
                self.receipts.deduplicated += 1
                if first:  # only a retry may find its key taken
                    self.receipts.conflicts.append(f"{spec.key}: first submit answered deduplicated")
            self.receipts.acknowledged[spec.key] = reply.job.job_id
            return

    async def cancel(self, job_id: str) -> None:
        request = job_service_pb2.CancelJobRequest(job_id=job_id, reason="chaos: cancelled by the test")
        deadline = time.monotonic() + GIVE_UP_AFTER
        while True:
            try:
                reply = await self.stub.CancelJob(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                self.receipts.errors[f"CancelJob:{exc.code().name}"] += 1
                if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
                    self.receipts.cancel_outcomes["already_finished"] += 1
                    return
                if exc.code() in FINAL_CODES or time.monotonic() > deadline:
                    self.receipts.cancel_outcomes[f"error_{exc.code().name}"] += 1
                    return
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if reply.job.status == common_pb2.JOB_STATUS_CANCELED:
                finished = reply.job.finished_at.ToDatetime(tzinfo=dt.UTC)
                self.receipts.cancelled[job_id] = Cancelled(job_id, finished)
                self.receipts.cancel_outcomes["cancelled"] += 1
            else:
                self.receipts.cancel_outcomes[f"answered_{common_pb2.JobStatus.Name(reply.job.status)}"] += 1
            return


async def submit_all(client: Client, specs: list[JobSpec], seconds: float, concurrency: int = 8) -> None:
    """Submit every spec, paced evenly over `seconds` (catching up after outages)."""
    started = time.monotonic()
    rate = len(specs) / max(seconds, 0.001)
    queue: asyncio.Queue[JobSpec] = asyncio.Queue()
    for spec in specs:
        queue.put_nowait(spec)

    async def submitter() -> None:
        while not queue.empty():
            spec = queue.get_nowait()
            delay = started + spec.index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.submit(spec)

    await asyncio.gather(*(submitter() for _ in range(concurrency)))


async def cancel_some(
    client: Client, specs: list[JobSpec], count: int, seconds: float, rng: random.Random, done: asyncio.Event
) -> None:
    """Cancel `count` random recently submitted jobs over `seconds`, slow ones preferred,
    so that cancels land on queued, running and already finished jobs alike."""
    by_key = {s.key: s for s in specs}
    for _ in range(count):
        await asyncio.sleep(rng.uniform(0, 2 * seconds / count))
        if done.is_set():
            return
        acked = list(client.receipts.acknowledged.items())[-60:]
        slow = [job for key, job in acked if by_key[key].job_type == "builtin.sleep"]
        pool = slow if slow and rng.random() < 0.6 else [job for _, job in acked]
        if pool:
            await client.cancel(rng.choice(pool))
