"""The dashboard's settings, read from the environment (DISPATCHD_DASHBOARD_*, plus the shared ones).

Invariant: the dashboard's own credentials (DISPATCHD_CA / CERT / KEY) only secure the channel
to the control plane; it never sends a token of its own: every call carries the browser
user's token, so a dashboard can never do more than the person using it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHD_DASHBOARD_", extra="ignore")

    listen: str = Field("127.0.0.1:8080", description="HTTP listen address (host:port) of the dashboard.")
    control_plane_target: str = Field(
        "127.0.0.1:50051",
        validation_alias=AliasChoices("DISPATCHD_CONTROL_PLANE_TARGET"),
        description="The control plane's gRPC address.",
    )
    health_listen: str = Field(
        "",
        validation_alias=AliasChoices("DISPATCHD_HEALTH_LISTEN"),
        description="Plaintext gRPC health-only address (Kubernetes probes); SERVING while the control plane is.",
    )
    token_header: str = Field(
        "",
        description="Request header an auth proxy puts the user's JWT in (X-Forwarded-Access-Token, "
        "Authorization); empty: the development login page, which keeps the token in a cookie.",
    )
    secret_file: Path | None = Field(
        None,
        description="File holding the key that signs CSRF tokens (shared by every replica); "
        "unset: a random key per process (one replica only).",
    )
    cookie_secure: bool = Field(False, description="Mark cookies Secure (set it behind HTTPS).")
    log_level: str = Field("INFO", validation_alias=AliasChoices("DISPATCHD_LOG_LEVEL"), description="Log level.")
    log_json: bool = Field(
        True, validation_alias=AliasChoices("DISPATCHD_LOG_JSON"), description="One JSON object per log line."
    )

    def address(self) -> tuple[str, int]:
        """`listen` as (host, port); ValueError naming the setting when it is not host:port."""
        host, _, port = self.listen.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"DISPATCHD_DASHBOARD_LISTEN={self.listen!r} is not host:port")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def login_page(self) -> bool:
        """The paste-a-token page exists only without an auth proxy (a proxy's header wins)."""
        return not self.token_header


def load() -> DashboardSettings:
    """The settings, or exit with one line naming what is wrong (no traceback), as the services do."""
    try:
        settings = DashboardSettings()
        settings.address()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"dashboard: bad configuration: {problems}") from None
    except ValueError as exc:
        raise SystemExit(f"dashboard: {exc}") from None
    return settings
