"""Argument types shared by the command-line tools (dispatchctl, dispatchd-worker).

Invariant: a value that does not parse raises argparse.ArgumentTypeError, so argparse reports
a usage error naming the option (exit status 2) rather than a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def key_value(what: str) -> Callable[[str], tuple[str, str]]:
    """A `type=` for KEY=VALUE options (the value may be empty or hold '='); `what` names one in errors."""

    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: use key=value")
        return key, value

    return parse
