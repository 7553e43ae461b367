"""A worker stream lives as long as its token: it ends UNAUTHENTICATED when the token expires,
unless the worker sends a fresh one (TokenRefresh), checked exactly as the opening token was.

The secured stack allows 5 s of clock skew, so a token minted 3 s past its `exp` opens a
stream that has about 2 s left.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from dispatchd.devtools.stack import ServiceProcess, python_module_argv
from dispatchd.v1 import common_pb2, job_service_pb2
from dispatchd.v1 import worker_service_pb2 as wpb
from tests.support.security import Credentials, SecureStack
from tests.support.streams import WorkerStream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NEARLY_EXPIRED = -3.0  # seconds of ttl: valid for the 5 s leeway minus 3


async def _open(stack: SecureStack, creds: Credentials, worker_id: str = "worker-a") -> WorkerStream:
    token = creds.token(worker_id, "worker", ttl_seconds=NEARLY_EXPIRED)
    stream = WorkerStream(stack.gateway, creds.worker(worker_id, token))
    ack = await stream.register(worker_id, ["sec.tokens"])
    assert ack.supports_token_refresh
    return stream


async def _refresh(stream: WorkerStream, token: str) -> wpb.WorkerAck:
    assert await stream.send(token_refresh=wpb.TokenRefresh(token=token))
    ack: wpb.WorkerAck = await stream.expect("ack", ack_kind="token")
    return ack


async def test_a_stream_ends_when_its_token_expires_and_refused_refreshes_do_not_save_it(
    secure_stack: SecureStack, creds: Credentials
) -> None:
    stream = await _open(secure_stack, creds)
    try:
        refused = {
            "another subject": (creds.token("worker-b", "worker"), "subject 'worker-b'"),
            "expired": (creds.token("worker-a", "worker", ttl_seconds=-120), "token has expired"),
            "not a worker": (creds.token("worker-a", "viewer"), "may not call WorkerService.Connect"),
            "untrusted key": (creds.token("worker-a", "worker", key="rogue"), "signature"),
            "not a token": ("garbage", "not a JWT"),
        }
        for name, (token, words) in refused.items():
            ack = await _refresh(stream, token)
            assert ack.status == wpb.ACK_STATUS_REJECTED, (name, ack)
            assert words in ack.message, (name, ack.message)
        assert await stream.ended(timeout=10) is grpc.StatusCode.UNAUTHENTICATED
        assert await stream.details() == "token expired"
    finally:
        await stream.close()


async def test_a_fresh_token_keeps_the_stream_open(secure_stack: SecureStack, creds: Credentials) -> None:
    stream = await _open(secure_stack, creds)
    try:
        ack = await _refresh(stream, creds.token("worker-a", "worker", ttl_seconds=600))
        assert ack.status == wpb.ACK_STATUS_ACCEPTED, ack
        # The old token's end passes while the stream stays registered.
        for _ in range(4):
            assert await stream.send(heartbeat=wpb.WorkerHeartbeat(worker_id="worker-a"))
            heartbeat = await stream.expect("ack", ack_kind="heartbeat")
            assert heartbeat.status == wpb.ACK_STATUS_ACCEPTED
            await asyncio.sleep(1.0)
    finally:
        await stream.close()


@contextmanager
def _rotating(token_file: Path, mint: Callable[[], str], every: float) -> Iterator[list[str]]:
    """Rewrite `token_file` with a fresh token every `every` seconds (atomically, as a sidecar would)."""
    written: list[str] = []
    stop = threading.Event()

    def rotate() -> None:
        while True:
            token = mint()
            partial = token_file.with_name(token_file.name + ".partial")
            partial.write_text(token + "\n")
            os.replace(partial, token_file)
            written.append(token)
            if stop.wait(every):
                return

    thread = threading.Thread(target=rotate, daemon=True)
    thread.start()
    try:
        yield written
    finally:
        stop.set()
        thread.join()


def test_an_sdk_worker_keeps_its_stream_across_token_rotations(
    secure_stack: SecureStack, creds: Credentials, tmp_path: Path, spawn_service: Callable[..., ServiceProcess]
) -> None:
    # Tokens live 2 s (+ 5 s leeway): the worker outlives several of them on one stream.
    token_file = tmp_path / "worker-b.jwt"
    cert, key = creds.pki.worker("worker-b")
    jobs = secure_stack.jobs(creds.client())
    operator = [("authorization", f"Bearer {creds.token('ops', 'operator')}")]
    with _rotating(token_file, lambda: creds.token("worker-b", "worker", ttl_seconds=2), every=1.0) as written:
        argv = [
            *python_module_argv("dispatchd.sdk.cli"), "--builtins", "--target", secure_stack.gateway,
            "--worker-id", "worker-b", "--token-file", str(token_file), "--heartbeat-seconds", "1",
            "--ca", str(creds.pki.ca), "--cert", str(cert), "--key", str(key),
        ]  # fmt: skip
        worker = spawn_service("rotating-worker", argv, {"DISPATCHD_LOG_LEVEL": "INFO"})
        started = time.monotonic()
        finished = 0
        while time.monotonic() - started < 16:
            job_id = jobs.SubmitJob(
                job_service_pb2.SubmitJobRequest(job_type="builtin.echo", payload=b"rotating"),
                timeout=10,
                metadata=operator,
            ).job.job_id
            done = jobs.WaitJob(job_service_pb2.WaitJobRequest(job_id=job_id), timeout=40, metadata=operator)
            assert done.terminal and done.job.status == common_pb2.JOB_STATUS_SUCCEEDED, done
            finished += 1
            time.sleep(1.0)
        log = worker.log_path.read_text()
    assert finished >= 5 and len(written) >= 10
    assert log.count("registered with the gateway") == 1, log[-3000:]
    assert log.count("token refresh: token accepted") >= 3, log[-3000:]
