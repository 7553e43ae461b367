"""What `server.serve` needs from security: the interceptor, the listening port, the probe port.

Kubernetes probes: when client certificates are required, the kubelet cannot complete a
handshake on the service port. `DISPATCHD_HEALTH_LISTEN` opens a second, plaintext port that
serves nothing but `grpc.health.v1.Health` (same status as the main port); point the
`grpc:` liveness/readiness probes at it and keep it off the Service (expose it to the
kubelet only). Health reveals nothing but SERVING / NOT_SERVING.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from dispatchd.platform.config import Settings
from dispatchd.platform.decoding import DecodeInterceptor
from dispatchd.platform.health import HealthServicer
from dispatchd.platform.security import audit
from dispatchd.platform.security.interceptor import SecurityInterceptor
from dispatchd.platform.security.settings import SecurityConfig, load
from dispatchd.platform.security.tls import CertificateFiles


@dataclass
class ServerSecurity:
    config: SecurityConfig
    interceptor: SecurityInterceptor
    certificates: CertificateFiles | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSecurity:
        """Raises SecurityConfigError (listing every problem) when the settings are unusable."""
        config = load(settings)
        certificates = CertificateFiles(config.tls) if config.tls is not None else None
        audit.configure()
        return cls(config, SecurityInterceptor(config), certificates)

    def add_port(self, server: grpc.aio.Server, listen: str) -> int:
        if self.certificates is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, self.certificates.server_credentials())

    def summary(self) -> dict[str, object]:
        return {
            "auth": self.config.auth_enabled,
            "tls": self.config.tls_enabled,
            "client_certs_required": self.config.client_certs_required,
            "reflection": self.config.reflection_enabled,
            "production": self.config.production,
        }


async def start_health_server(listen: str, servicer: HealthServicer) -> grpc.aio.Server | None:
    """A plaintext server with only health on it (None when `listen` is empty)."""
    if not listen:
        return None
    # No security interceptor here, so nothing else would keep undecodable bytes from being UNKNOWN.
    server = grpc.aio.server(interceptors=[DecodeInterceptor()], options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on DISPATCHD_HEALTH_LISTEN={listen}")
    await server.start()
    return server
