"""The JSON types a verified token's claims must have, checked before any claim is used.

pyjwt converts some values it should refuse (an `exp` of `"9999999999"` is compared as a
number), so after the signature and the registered checks pass, every claim we read is held
to the type RFC 7519 §4.1 gives it: `exp`/`nbf`/`iat` are NumericDate numbers (never strings
or booleans), `sub`/`iss`/`jti` strings, `aud` a string or an array of strings. The role
claims have the types the README documents: `roles` a string or an array of strings, `scope`
a space-separated string (RFC 8693), `scp` a string or an array of strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

NUMERIC_DATES = ("exp", "nbf", "iat")
STRINGS = ("sub", "iss", "jti", "scope")
STRING_OR_STRINGS = ("aud", "roles", "scp")


def _numeric_date(value: object) -> bool:
    # bool is an int in Python, and JSON true is not a date.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _string(value: object) -> bool:
    return isinstance(value, str)


def _string_or_strings(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))


_RULES: list[tuple[tuple[str, ...], Callable[[object], bool], str]] = [
    (NUMERIC_DATES, _numeric_date, "a number (NumericDate)"),
    (STRINGS, _string, "a string"),
    (STRING_OR_STRINGS, _string_or_strings, "a string or an array of strings"),
]


def type_problem(claims: Mapping[str, object]) -> str | None:
    """Why a claim present in `claims` has the wrong JSON type, or None when all are right.

    An absent claim is not a type problem (which claims are required is checked elsewhere);
    an explicit JSON null is, since no claim we read may be null.
    """
    for names, check, expected in _RULES:
        for name in names:
            if name in claims and not check(claims[name]):
                return f"token {name} claim must be {expected}, not {type(claims[name]).__name__}"
    return None
