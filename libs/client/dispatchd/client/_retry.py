"""How often and how patiently a call is repeated while the control plane is UNAVAILABLE.

Invariant: only UNAVAILABLE is retried (the server did not take the call); the delay grows
from `initial` by `multiplier` and never exceeds `maximum`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Retries:
    """`attempts` counts every try, the first included (1 turns retries off)."""

    attempts: int = 5
    initial: dt.timedelta = dt.timedelta(milliseconds=200)
    maximum: dt.timedelta = dt.timedelta(seconds=5)
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try: it must be at least 1")

    def delays(self) -> Iterator[float]:
        """Seconds to sleep before each retry: attempts - 1 of them, with jitter so that
        many clients cut off together do not come back in step."""
        delay = self.initial.total_seconds()
        for _ in range(self.attempts - 1):
            yield random.uniform(delay / 2, delay)
            delay = min(delay * self.multiplier, self.maximum.total_seconds())
