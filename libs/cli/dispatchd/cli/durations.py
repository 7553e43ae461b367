"""Human durations on the command line: 500ms, 5s, 1.5s, 2m, 1h (a bare number is seconds).

Points in time are an ISO 8601 timestamp (2025-03-01T12:00:00Z; no zone means UTC) or a
duration meaning that long ago (`--since 1h`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from decimal import Decimal, InvalidOperation

_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_seconds(text: str) -> Decimal:
    """Seconds in `text`, exactly; raises ValueError with a usage hint."""
    match = _PATTERN.match(text.lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 500ms, 5s, 1.5s, 2m or 1h")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid duration {text!r}") from None
    return number * _UNITS[match.group(2) or "s"]


def duration_arg(text: str) -> dt.timedelta:
    """argparse `type=`: a duration string as a timedelta."""
    try:
        return dt.timedelta(seconds=float(parse_seconds(text)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    """argparse `type=`: a non-negative number of seconds (units allowed)."""
    try:
        return float(parse_seconds(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_timestamp(text: str) -> dt.datetime:
    """An ISO 8601 timestamp; no zone means UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {text!r}: use e.g. 2025-03-01T12:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 timestamp, or a duration meaning that long before `now`."""
    try:
        ago = parse_seconds(text)
    except ValueError:
        pass
    else:
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=float(ago))
    try:
        return parse_timestamp(text)
    except ValueError:
        hint = "use e.g. 2025-03-01T12:00:00Z, or a duration ago such as 1h"
        raise ValueError(f"invalid time {text!r}: {hint}") from None


def time_arg(text: str) -> dt.datetime:
    """argparse `type=`: a timestamp or a duration ago (see parse_time)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def timestamp_arg(text: str) -> dt.datetime:
    """argparse `type=`: an ISO 8601 timestamp."""
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_seconds(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
