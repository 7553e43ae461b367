"""Opaque page tokens. A malformed token is the caller's error, never a server error."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

from dispatchd.platform.errors import InvalidArgument

_MALFORMED = "page_token is malformed; pass back a next_page_token unchanged"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(_MALFORMED) from exc


def _encode_keyset(kind: str, at: dt.datetime, job_id: uuid.UUID) -> str:
    micros = (at - _EPOCH) // _MICROSECOND  # exact: Postgres keeps microseconds
    return _encode(f"{kind}:{micros}:{job_id}")


def _decode_keyset(kind: str, token: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        found, micros, job_id = _decode(token).split(":")
        if found != kind:
            raise ValueError(found)
        return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(job_id)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgument(_MALFORMED) from exc


# Each list has its own kind of token, so a token from one list is refused by another.


def encode_job_cursor(created_at: dt.datetime, job_id: uuid.UUID) -> str:
    return _encode_keyset("j1", created_at, job_id)


def decode_job_cursor(token: str) -> tuple[dt.datetime, uuid.UUID]:
    return _decode_keyset("j1", token)


def encode_dead_letter_cursor(finished_at: dt.datetime, job_id: uuid.UUID) -> str:
    return _encode_keyset("d1", finished_at, job_id)


def decode_dead_letter_cursor(token: str) -> tuple[dt.datetime, uuid.UUID]:
    return _decode_keyset("d1", token)


def encode_attempt_cursor(attempt: int) -> str:
    return _encode(f"e1:{attempt}")


def decode_attempt_cursor(token: str) -> int:
    try:
        kind, attempt = _decode(token).split(":")
        if kind != "e1" or int(attempt) < 0:
            raise ValueError(kind)
        return int(attempt)
    except ValueError as exc:
        raise InvalidArgument(_MALFORMED) from exc
