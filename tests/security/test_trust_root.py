"""One trust root across regions: a worker certified in region A registers with region B's gateway.

As after a failover: the gateway serves a certificate from region B's intermediate and trusts
only the shared root; the worker holds a certificate from region A's intermediate and trusts the
same root. Both sides present fullchains, so neither needs the other region's intermediate.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from dispatchd.common.security import ClientSecurity
from dispatchd.devtools.stack import free_listen
from dispatchd.v1 import worker_service_pb2 as wpb
from tests.support.chains import TrustRoot
from tests.support.processes import Spawner
from tests.support.security import Credentials
from tests.support.streams import WorkerStream

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKER = "worker-a"


async def _registers(target: str, security: ClientSecurity) -> grpc.StatusCode:
    stream = WorkerStream(target, security)
    try:
        await stream.offer(WORKER, ["trust.root"])
        message = await stream.reply()
        if message is not None and message.WhichOneof("payload") == "ack":
            return grpc.StatusCode.OK if message.ack.status == wpb.ACK_STATUS_ACCEPTED else grpc.StatusCode.UNKNOWN
        return await stream.ended()
    finally:
        await stream.close()


async def test_a_worker_from_region_a_registers_in_region_b(
    tmp_path: Path, creds: Credentials, database_url: str, redis_url: str, spawn_service: Spawner
) -> None:
    trust = TrustRoot.create(tmp_path / "pki")
    server_cert, server_key = trust.region("region-b").server()
    env = {
        **creds.server_env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCHD_TLS_CERT_FILE": str(server_cert),
        "DISPATCHD_TLS_KEY_FILE": str(server_key),
        "DISPATCHD_TLS_CLIENT_CA_FILE": str(trust.bundle),
        "DISPATCHD_SHUTDOWN_GRACE_SECONDS": "1",
    }
    gateway = spawn_service.service("worker-gateway", env, health=free_listen())
    token = creds.token(WORKER, "worker")

    cert, key = trust.region("region-a").worker(WORKER)
    from_region_a = ClientSecurity(token=token, ca=trust.bundle, cert=cert, key=key)
    assert await _registers(gateway.address, from_region_a) is grpc.StatusCode.OK

    unrelated = TrustRoot.create(tmp_path / "unrelated-pki", "someone else's root")
    cert, key = unrelated.region("region-a").worker(WORKER)
    stranger = ClientSecurity(token=token, ca=trust.bundle, cert=cert, key=key)
    assert await _registers(gateway.address, stranger) is grpc.StatusCode.UNAVAILABLE
