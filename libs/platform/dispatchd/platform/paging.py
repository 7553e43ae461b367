"""Page tokens: opaque, signed, and bound to the listing they page.

Invariant: a page token the server accepts is one it issued, for the same listing and the same
query (filters, job id, the caller's owner scope), and the position inside it is in range for
the column it is compared with. Anything else is the caller's INVALID_ARGUMENT, never a server
error: a client cannot forge a position (an attempt past int4, a timestamp Postgres cannot
hold) nor replay a token against another listing.

A token is `<position>.<mac>`, both base64url: the position is a JSON list (the keyset of the
last row returned), the mac a truncated HMAC-SHA256 under the deployment's key over the
listing, its query and the position. Every control-plane replica must use the same key
(`DISPATCHD_PAGE_TOKEN_SECRET_FILE`) so a token issued by one is accepted by another; without
one each process draws a random key, which suits a single development process only (the
production guardrail requires the file). Positions are range-checked after the mac anyway, so
a leaked key still cannot reach the database with an out-of-range value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatchd.platform.errors import InvalidArgument

MIN_KEY_BYTES = 32
MAX_ATTEMPT = 2**31 - 1  # executions.attempt is a Postgres integer
MAX_SEQUENCE = 2**63 - 1  # a bigserial (execution_logs.log_id)
_MAC_BYTES = 16
_DOMAIN = b"dispatchd.page-token.v1"
MALFORMED = "page_token is malformed or belongs to another listing; pass back a next_page_token unchanged"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)

Scalar = str | int | None
TimeId = tuple[dt.datetime, uuid.UUID]


class PageKeyError(ValueError):
    """The configured page-token key cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Listing:
    """What a token pages: the listing's name and every value that selects its rows."""

    name: str
    query: tuple[Scalar, ...] = ()


def read_key(path: str) -> bytes:
    """The key in `path` (surrounding whitespace ignored), or PageKeyError."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise PageKeyError(f"DISPATCHD_PAGE_TOKEN_SECRET_FILE: cannot read {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise PageKeyError(f"DISPATCHD_PAGE_TOKEN_SECRET_FILE: {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES}")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issues and opens page tokens under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_key_file(cls, path: str) -> PageTokens:
        """Under the key in `path`, or (empty path) under a random key of this process only."""
        return cls(read_key(path) if path else secrets.token_bytes(MIN_KEY_BYTES))

    def _mac(self, listing: Listing, position: bytes) -> bytes:
        bound = json.dumps([listing.name, list(listing.query)], separators=(",", ":")).encode()
        digest = hmac.new(self._key, b"\0".join([_DOMAIN, bound, position]), hashlib.sha256).digest()
        return digest[:_MAC_BYTES]

    def _issue(self, listing: Listing, position: Sequence[Scalar]) -> str:
        payload = json.dumps(list(position), separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(listing, payload))}"

    def _open(self, listing: Listing, token: str) -> list[object]:
        try:
            encoded, _, mac = token.partition(".")
            payload = _unb64(encoded)
            if not hmac.compare_digest(_unb64(mac), self._mac(listing, payload)):
                raise ValueError("bad mac")
            position = json.loads(payload)
        except (ValueError, binascii.Error) as exc:
            raise InvalidArgument(MALFORMED) from exc
        if not isinstance(position, list):
            raise InvalidArgument(MALFORMED)
        return position

    def issue_time_id(self, listing: Listing, at: dt.datetime, row_id: uuid.UUID) -> str:
        micros = (at - _EPOCH) // _MICROSECOND  # exact: Postgres keeps microseconds
        return self._issue(listing, [micros, str(row_id)])

    def open_time_id(self, listing: Listing, token: str) -> TimeId | None:
        """The (timestamp, id) after which the next page starts; None for the first page."""
        if not token:
            return None
        match self._open(listing, token):
            case [int() as micros, str() as row_id] if not isinstance(micros, bool):
                try:
                    return _EPOCH + micros * _MICROSECOND, uuid.UUID(row_id)
                except (ValueError, OverflowError) as exc:
                    raise InvalidArgument(MALFORMED) from exc
        raise InvalidArgument(MALFORMED)

    def issue_attempt(self, listing: Listing, attempt: int) -> str:
        return self._issue(listing, [attempt])

    def open_attempt(self, listing: Listing, token: str) -> int:
        """The attempt after which the next page starts; 0 for the first page."""
        return self._open_number(listing, token, MAX_ATTEMPT)

    # A bigserial position (execution_logs.log_id): issued like an attempt, with a wider range.
    issue_sequence = issue_attempt

    def open_sequence(self, listing: Listing, token: str) -> int:
        """The bigserial id after which the next page starts; 0 for the first page."""
        return self._open_number(listing, token, MAX_SEQUENCE)

    def _open_number(self, listing: Listing, token: str, maximum: int) -> int:
        if not token:
            return 0
        match self._open(listing, token):
            case [int() as number] if not isinstance(number, bool) and 0 <= number <= maximum:
                return number
        raise InvalidArgument(MALFORMED)
