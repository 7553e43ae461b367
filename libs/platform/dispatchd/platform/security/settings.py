"""Security configuration, validated once at startup, and the production guardrail.

Every problem is reported at once, naming the variable to change, and the process refuses
to start: a service that silently ran with half its security configuration would be worse
than one that does not run. That includes an APP_ENV outside `APP_ENVS`: a typo such as
`prod` must not quietly start a development service (auth off) where production was meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dispatchd.platform.config import AuditLevel, Settings
from dispatchd.platform.security.keys import KeyFileError, KeySet
from dispatchd.platform.security.tokens import SUPPORTED_ALGORITHMS, TokenVerifier

PRODUCTION = "production"
DEVELOPMENT = "development"
# Every APP_ENV a service accepts (case-insensitive); anything else refuses to start.
APP_ENVS = (DEVELOPMENT, PRODUCTION)


class SecurityConfigError(ValueError):
    """The security settings are unusable or unsafe; the message lists every problem."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None
    require_client_cert: bool


@dataclass(frozen=True)
class SecurityConfig:
    auth_enabled: bool
    verifier: TokenVerifier | None
    tls: TlsFiles | None
    reflection_enabled: bool
    max_streams_per_identity: int
    production: bool
    audit_level: AuditLevel = "all"

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None

    @property
    def client_certs_required(self) -> bool:
        return self.tls is not None and self.tls.require_client_cert


def _paths(value: str) -> list[Path]:
    return [Path(part.strip()) for part in value.split(",") if part.strip()]


def _algorithms(value: str) -> list[str]:
    return [part.strip().upper() for part in value.split(",") if part.strip()]


def _tls(settings: Settings, problems: list[str]) -> TlsFiles | None:
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if not cert and not key:
        if settings.tls_require_client_cert:
            problems.append("DISPATCHD_TLS_REQUIRE_CLIENT_CERT needs TLS: set DISPATCHD_TLS_CERT_FILE and _KEY_FILE")
        return None
    if not cert or not key:
        problems.append("TLS needs both DISPATCHD_TLS_CERT_FILE and DISPATCHD_TLS_KEY_FILE")
        return None
    for variable, path in (("DISPATCHD_TLS_CERT_FILE", cert), ("DISPATCHD_TLS_KEY_FILE", key)):
        if not Path(path).is_file():
            problems.append(f"{variable}: {path} is not a readable file")
    if settings.tls_require_client_cert and not ca:
        problems.append(
            "DISPATCHD_TLS_REQUIRE_CLIENT_CERT needs DISPATCHD_TLS_CLIENT_CA_FILE (the CA to verify against)"
        )
    if ca and not Path(ca).is_file():
        problems.append(f"DISPATCHD_TLS_CLIENT_CA_FILE: {ca} is not a readable file")
    if ca and not settings.tls_require_client_cert:
        problems.append(
            "DISPATCHD_TLS_CLIENT_CA_FILE is set but DISPATCHD_TLS_REQUIRE_CLIENT_CERT is false: "
            "client certificates are verified only when required; set it to true"
        )
    return TlsFiles(Path(cert), Path(key), Path(ca) if ca else None, settings.tls_require_client_cert)


def _verifier(settings: Settings, problems: list[str]) -> TokenVerifier | None:
    algorithms = _algorithms(settings.jwt_algorithms)
    bad = [alg for alg in algorithms if alg not in SUPPORTED_ALGORITHMS]
    if bad or not algorithms:
        problems.append(
            f"DISPATCHD_JWT_ALGORITHMS: {', '.join(bad) or 'empty'} not supported; "
            f"choose from {', '.join(SUPPORTED_ALGORITHMS)}"
        )
        return None
    asymmetric = [alg for alg in algorithms if alg != "HS256"]
    pem_files = _paths(settings.jwt_public_key_files)
    jwks = Path(settings.jwt_jwks_file) if settings.jwt_jwks_file else None
    if asymmetric and not pem_files and jwks is None:
        problems.append(
            f"{', '.join(asymmetric)} need public keys: set DISPATCHD_JWT_PUBLIC_KEY_FILES or DISPATCHD_JWT_JWKS_FILE "
            "(or limit DISPATCHD_JWT_ALGORITHMS)"
        )
        return None
    try:
        keys = KeySet(pem_files, jwks)
    except KeyFileError as exc:
        problems.append(f"token keys: {exc}")
        return None
    try:
        return TokenVerifier(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=algorithms,
            keys=keys,
            hs256_secret=settings.jwt_hs256_secret.encode(),
            leeway_seconds=settings.jwt_leeway_seconds,
        )
    except ValueError as exc:
        problems.append(f"token verification: {exc} (DISPATCHD_JWT_*)")
        return None


def guardrail(settings: Settings) -> list[str]:
    """What makes these settings unfit for APP_ENV=production (empty: fit)."""
    problems: list[str] = []
    if not settings.auth_enabled:
        problems.append("authentication is off (set DISPATCHD_AUTH_ENABLED=true)")
    if not (settings.tls_cert_file and settings.tls_key_file):
        problems.append("TLS is off (set DISPATCHD_TLS_CERT_FILE and DISPATCHD_TLS_KEY_FILE)")
    if not settings.tls_require_client_cert:
        problems.append(
            "client certificates are not required (set DISPATCHD_TLS_REQUIRE_CLIENT_CERT=true and "
            "DISPATCHD_TLS_CLIENT_CA_FILE)"
        )
    if settings.jwt_hs256_secret:
        problems.append("a development secret is configured (unset DISPATCHD_JWT_HS256_SECRET)")
    if "HS256" in _algorithms(settings.jwt_algorithms):
        problems.append("HS256 (shared-secret tokens) is allowed (remove it from DISPATCHD_JWT_ALGORITHMS)")
    if not settings.page_token_secret_file:
        problems.append(
            "page tokens would be signed with a key of each process, which other replicas refuse "
            "(set DISPATCHD_PAGE_TOKEN_SECRET_FILE to a key shared by every control plane)"
        )
    if settings.audit_level == "off":
        problems.append("the audit log is off (set DISPATCHD_AUDIT_LEVEL to all, mutations or denied)")
    return problems


def app_env(settings: Settings) -> str:
    """The APP_ENV, normalized: one of `APP_ENVS`, or SecurityConfigError saying which are known."""
    value = settings.app_env.strip().lower()
    if value not in APP_ENVS:
        raise SecurityConfigError(
            f"refusing to start: APP_ENV={settings.app_env!r} is not a known environment; "
            f"use one of: {', '.join(APP_ENVS)}"
        )
    return value


def load(settings: Settings) -> SecurityConfig:
    """The validated configuration, or SecurityConfigError listing every problem."""
    production = app_env(settings) == PRODUCTION
    problems: list[str] = []
    if production:
        unsafe = guardrail(settings)
        if unsafe:
            raise SecurityConfigError("refusing to start with APP_ENV=production: " + "; ".join(unsafe))
    tls = _tls(settings, problems)
    verifier = _verifier(settings, problems) if settings.auth_enabled else None
    if problems:
        raise SecurityConfigError("invalid security settings: " + "; ".join(problems))
    return SecurityConfig(
        auth_enabled=settings.auth_enabled,
        verifier=verifier,
        tls=tls,
        reflection_enabled=settings.reflection_enabled,
        max_streams_per_identity=settings.max_streams_per_identity,
        production=production,
        audit_level=settings.audit_level,
    )
