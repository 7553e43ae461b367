"""Settings for every dispatchd process, read from the environment.

One class so the README's configuration table has one source. `DATABASE_URL` and
`REDIS_URL` keep their conventional unprefixed names; everything else is `DISPATCHD_*`.
"""

from __future__ import annotations

import socket
import uuid
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# What the audit log records (dispatchd.platform.security.audit says what each level means).
AuditLevel = Literal["all", "mutations", "denied", "off"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHD_", extra="ignore")

    database_url: str = Field(
        "postgresql://dispatchd:dispatchd@127.0.0.1:5432/dispatchd",
        validation_alias=AliasChoices("DATABASE_URL", "DISPATCHD_DATABASE_URL"),
        description="Postgres connection URL (the source of truth).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "DISPATCHD_REDIS_URL"),
        description="Redis URL (ready queues, notifications, leader lease).",
    )
    redis_prefix: str = Field("dispatchd", description="Prefix of every Redis key and channel.")

    control_plane_listen: str = Field("127.0.0.1:50051", description="Control plane gRPC listen address.")
    gateway_listen: str = Field("127.0.0.1:50052", description="Worker gateway gRPC listen address.")
    scheduler_listen: str = Field("127.0.0.1:50053", description="Scheduler gRPC (health) listen address.")

    db_pool_min: int = Field(2, description="Minimum Postgres connections per process.")
    # Measured, not guessed (README "Configuration"): 2, 4, 10 and 20 under the perf burst.
    db_pool_max: int = Field(
        10,
        description="Maximum Postgres connections per process (10: no size from 2 to 20 did better "
        "under a 3,000-job burst on 2 cores; see the README).",
    )

    lease_seconds: float = Field(30.0, description="Lease of a claimed execution; heartbeats renew it.")
    heartbeat_seconds: float = Field(5.0, description="Heartbeat interval the SDK uses and the gateway expects.")
    worker_offline_seconds: float = Field(
        20.0, description="A worker silent this long is marked offline and its executions released."
    )
    leader_ttl_seconds: float = Field(2.0, description="TTL of the scheduler's Redis leader lease.")
    reconcile_seconds: float = Field(
        1.0, description="Safety-net interval of the scheduler's reconcile loop (events wake it sooner)."
    )
    reconcile_grace_seconds: float = Field(
        2.0, ge=0, description="A due queued execution missing from Redis is re-queued (a repair) only once "
        "it has been missing this long: before that the fast path (a push, a claim) is still handling it."
    )
    shutdown_grace_seconds: float = Field(10.0, description="Grace period for in-flight work on SIGTERM.")
    registration_timeout_seconds: float = Field(
        10.0, gt=0, description="A worker stream that has not registered this long after opening is ended "
        "(DEADLINE_EXCEEDED)."
    )
    stream_stall_seconds: float = Field(
        10.0, gt=0, description="A worker stream that leaves its replies unread this long (its outbound "
        "queue full, nothing sent) is ended with RESOURCE_EXHAUSTED."
    )
    stream_batches: bool = Field(
        True, description="Offer batched stream messages (several assignments, acks, results or start "
        "notices per message) to workers that announce support at registration; off: one message per item "
        "for every worker.",
    )
    priority_aging_seconds: float = Field(
        10.0,
        ge=0,
        description="Each this many seconds an execution waits raise its effective priority by 1 "
        "(0: strict priorities, no aging). Use one value on every process.",
    )
    # Connection limits (dispatchd.platform.connections): clients reconnect, so replicas share them.
    max_connection_age_seconds: float = Field(
        300.0, ge=0, description="A client connection older than this (±10% jitter) is sent GOAWAY, so the client "
        "reconnects and round_robin spreads it over the replicas; 0: never."
    )
    max_connection_age_grace_seconds: float = Field(
        90.0, ge=0, description="How long calls open at the GOAWAY may still run before the connection is closed "
        "(longer than a client's 60 s wait chunk); 0: until they end (the gateway: worker streams end by draining)."
    )
    keepalive_min_ping_seconds: float = Field(
        30.0, gt=0, description="Client keepalive pings closer than this are strikes (GOAWAY too_many_pings); "
        "our clients ping every 60 s, only while a call is open."
    )
    gateway_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        description="Identity of this gateway replica (defaults to hostname plus a random suffix).",
    )

    region: str = Field("local", description="Name of the region this process runs in.")
    primary_region: str = Field(
        "local", description="The region that accepts mutations; a passive region names it when refusing one."
    )
    allow_mutations: bool = Field(
        True,
        description="False makes this region passive: reads only, no scheduler leadership, no worker streams.",
    )

    max_payload_bytes: int = Field(1 << 20, description="Largest accepted job payload or result, in bytes.")
    max_metadata_entries: int = Field(64, description="Most metadata entries on a job.")
    max_page_size: int = Field(500, description="Largest page a list call returns.")
    max_batch_submit: int = Field(
        1000, ge=1, description="Most jobs one BatchSubmitJobs call may carry; more is INVALID_ARGUMENT."
    )
    default_page_size: int = Field(50, description="Page size when the request leaves it unset.")
    page_token_secret_file: str = Field(
        "",
        description="File holding the key (at least 32 bytes) that signs page tokens; every control-plane "
        "replica needs the same one. Empty: a random key per process (development only).",
    )

    # Security (dispatchd.platform.security). Defaults are for local development: all off.
    app_env: str = Field(
        "development",
        validation_alias=AliasChoices("APP_ENV", "DISPATCHD_APP_ENV"),
        description="`development` or `production` (any other value refuses to start); `production` refuses "
        "to start unless auth, TLS and client certificates are on and no development secret is set.",
    )
    auth_enabled: bool = Field(False, description="Require a JWT (`authorization: Bearer`) on every call but health.")
    jwt_issuer: str = Field("dispatchd-dev", description="The `iss` every token must carry.")
    jwt_audience: str = Field("dispatchd", description="The `aud` every token must carry.")
    jwt_algorithms: str = Field(
        "RS256,ES256", description="Accepted token algorithms (RS256, ES256; HS256 for development only)."
    )
    jwt_public_key_files: str = Field(
        "", description="Comma-separated PEM public keys or certificates; the file name (sans extension) is the kid."
    )
    jwt_jwks_file: str = Field("", description="JWKS file of RS256/ES256 public keys, chosen by kid.")
    jwt_hs256_secret: str = Field(
        "", description="Shared HS256 secret, at least 32 bytes: development only (refused in production)."
    )
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    tls_cert_file: str = Field("", description="Server certificate chain (PEM); with the key file, turns TLS on.")
    tls_key_file: str = Field("", description="Private key of the server certificate (PEM).")
    tls_client_ca_file: str = Field("", description="CA bundle that client certificates must chain to.")
    tls_require_client_cert: bool = Field(False, description="Refuse connections without a valid client certificate.")
    health_listen: str = Field(
        "", description="Extra plaintext address serving only gRPC health (for Kubernetes probes); empty: none."
    )
    reflection_enabled: bool = Field(True, description="Serve gRPC reflection (admin-only when auth is on).")
    max_streams_per_identity: int = Field(
        16, ge=1, description="Open worker streams one authenticated identity may hold at once."
    )

    audit_level: AuditLevel = Field(
        "all",
        description="What the audit log records: `all` calls, `mutations` (and refused calls), only `denied` "
        "calls, or `off` (refused with APP_ENV=production).",
    )

    metrics_listen: str = Field(
        "",
        description="Address (`host:port`) serving Prometheus metrics at `/metrics`; empty: not served "
        "(the deploy manifests use `0.0.0.0:9464`).",
    )

    log_level: str = Field("INFO", description="Log level of every process.")
    log_json: bool = Field(True, description="Log one JSON object per line (false: plain text).")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
