"""JWT verification: a bearer token becomes a `Principal` or a `TokenError` saying why not.

Rules, in order:
- the token is at most `MAX_TOKEN_BYTES` and has three segments;
- its header's `alg` is on the allow-list (never `none`), and the key comes from the source
  that matches the algorithm's family: RSA keys for RS256, P-256 keys for ES256, the shared
  secret for HS256. A public key is never used as an HMAC secret (no algorithm confusion);
- the signature verifies with a key chosen by `kid` (see `keys.KeySet.candidates`);
- `exp`, `iss`, `aud` and `sub` are present; `exp`/`nbf`/`iat` hold within `leeway`;
  `iss` and `aud` equal the configured ones; `sub` is a non-empty string;
- every claim has the JSON type RFC 7519 gives it (`claims.type_problem`): pyjwt alone would
  take an `exp` of `"9999999999"` as a number.

A principal is valid until `exp` plus the leeway (`valid_until`): the same instant a new call
with the token would start being refused, so a stream can be cut exactly then.

Roles come from `roles` (list or string) and `scope` (see `roles.roles_from_claims`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from dispatchd.platform.security.claims import type_problem
from dispatchd.platform.security.keys import KeySet
from dispatchd.platform.security.roles import roles_from_claims

MAX_TOKEN_BYTES = 8 * 1024
MAX_SUBJECT_CHARS = 256
SUPPORTED_ALGORITHMS = ("RS256", "ES256", "HS256")
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class TokenError(Exception):
    """The token is not acceptable; the message is safe to return to the caller."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]
    issuer: str = ""
    token_id: str = ""
    expires_at: float = 0.0
    # expires_at plus the verifier's leeway; 0.0: never (no token).
    valid_until: float = 0.0

    def has(self, role: str) -> bool:
        return role in self.roles


_CLAIM_ERRORS: list[tuple[type[Exception], str]] = [
    (jwt_errors.ExpiredSignatureError, "token has expired"),
    (jwt_errors.ImmatureSignatureError, "token is not valid yet (nbf)"),
    (jwt_errors.InvalidAudienceError, "token audience is not accepted"),
    (jwt_errors.InvalidIssuerError, "token issuer is not accepted"),
    (jwt_errors.InvalidIssuedAtError, "token iat claim is invalid"),
    (jwt_errors.InvalidSubjectError, "token sub claim must be a non-empty string"),
]


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        keys: KeySet,
        hs256_secret: bytes = b"",
        leeway_seconds: float = 30.0,
    ) -> None:
        unknown = [alg for alg in algorithms if alg not in SUPPORTED_ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(
                f"unsupported token algorithm(s) {unknown or algorithms}; choose from {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        if "HS256" in algorithms and len(hs256_secret) < MIN_SECRET_BYTES:
            raise ValueError(f"HS256 needs a secret of at least {MIN_SECRET_BYTES} bytes")
        if hs256_secret and "HS256" not in algorithms:
            raise ValueError("an HS256 secret is configured but HS256 is not among the allowed algorithms")
        if any(alg != "HS256" for alg in algorithms) and not keys.configured:
            raise ValueError("RS256/ES256 need public keys: set a PEM key file or a JWKS file")
        if not issuer or not audience:
            raise ValueError("the token issuer and audience must be set")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.keys = keys
        self._secret = hs256_secret
        self.leeway = leeway_seconds

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        if token.count(".") != 2:
            raise TokenError("token is not a JWT (expected header.payload.signature)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise TokenError("token header is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError(f"token algorithm {alg!r} is not allowed (allowed: {', '.join(self.algorithms)})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("token kid must be a string")
        claims = self._decode(token, alg, kid)
        return self._principal(claims)

    def _decode(self, token: str, alg: str, kid: str | None) -> dict[str, Any]:
        keys: list[Any]
        if alg == "HS256":
            keys = [self._secret]
        else:
            keys = [k.key for k in self.keys.candidates(alg, kid)]
            if not keys:
                raise TokenError(f"no verification key for algorithm {alg}" + (f" and kid {kid!r}" if kid else ""))
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": REQUIRED_CLAIMS},
                )
            except jwt_errors.InvalidSignatureError:
                continue  # rotation: another configured key may have signed it
            except jwt_errors.MissingRequiredClaimError as exc:
                raise TokenError(f"token lacks the required {exc.claim!r} claim") from None
            except jwt_errors.PyJWTError as exc:
                for kind, message in _CLAIM_ERRORS:
                    if isinstance(exc, kind):
                        raise TokenError(message) from None
                raise TokenError("token is malformed") from None
        raise TokenError("token signature does not verify with any trusted key")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        problem = type_problem(claims)
        if problem is not None:
            raise TokenError(problem)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise TokenError("token sub claim must be a non-empty string")
        if len(subject) > MAX_SUBJECT_CHARS or any(ord(c) < 32 for c in subject):
            raise TokenError(f"token sub must be at most {MAX_SUBJECT_CHARS} printable characters")
        exp = float(claims["exp"])  # required, and a number (type_problem)
        return Principal(
            subject=subject,
            roles=roles_from_claims(claims),
            issuer=str(claims["iss"]),
            token_id=str(claims.get("jti", "")),
            expires_at=exp,
            valid_until=exp + self.leeway,
        )


def bearer_token(authorization: str) -> str:
    """The token of an `authorization: Bearer <token>` header value."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("authorization metadata must be 'Bearer <token>'")
    return token.strip()
