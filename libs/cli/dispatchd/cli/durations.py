"""Human durations on the command line: 500ms, 5s, 1.5s, 2m, 1h (a bare number is seconds)."""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

from google.protobuf import duration_pb2

_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_NANOS = Decimal(1_000_000_000)


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


def to_proto(seconds: Decimal | float) -> duration_pb2.Duration:
    total_nanos = int((Decimal(seconds) * _NANOS).to_integral_value())
    whole, nanos = divmod(total_nanos, 1_000_000_000)
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def duration_arg(text: str) -> duration_pb2.Duration:
    """argparse `type=`: a duration string as a protobuf Duration."""
    try:
        return to_proto(parse_seconds(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    """argparse `type=`: a non-negative number of seconds (units allowed)."""
    try:
        return float(parse_seconds(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_seconds(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
