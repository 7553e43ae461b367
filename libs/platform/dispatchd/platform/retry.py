"""Retry policy: defaults, validation and exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from dispatchd.platform.errors import InvalidArgument

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INITIAL_BACKOFF_MS = 5_000
DEFAULT_MAX_BACKOFF_MS = 60_000
MAX_ATTEMPTS_LIMIT = 100
MAX_BACKOFF_LIMIT_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff_ms: int = DEFAULT_INITIAL_BACKOFF_MS
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS

    @classmethod
    def from_parts(
        cls, max_attempts: int | None, initial_backoff_ms: int | None, max_backoff_ms: int | None
    ) -> RetryPolicy:
        """Build a policy from optional parts; unset parts take the defaults."""
        attempts = max_attempts or DEFAULT_MAX_ATTEMPTS
        initial = DEFAULT_INITIAL_BACKOFF_MS if initial_backoff_ms is None else initial_backoff_ms
        maximum = DEFAULT_MAX_BACKOFF_MS if max_backoff_ms is None else max_backoff_ms
        if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvalidArgument(f"retry_policy.max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        if initial < 0 or maximum < 0:
            raise InvalidArgument("retry_policy backoffs must not be negative")
        if maximum > MAX_BACKOFF_LIMIT_MS or initial > MAX_BACKOFF_LIMIT_MS:
            raise InvalidArgument("retry_policy backoffs must not exceed 24 hours")
        if max_backoff_ms is not None and initial > maximum:
            raise InvalidArgument("retry_policy.initial_backoff must not exceed max_backoff")
        return cls(attempts, initial, max(initial, maximum))

    def backoff_ms(self, failed_attempt: int, rng: random.Random | None = None) -> int:
        """Delay before the attempt after `failed_attempt` (1-based): full jitter over the cap."""
        exponent = min(failed_attempt - 1, 62)
        cap = min(self.max_backoff_ms, self.initial_backoff_ms * (1 << exponent))
        return int((rng or random).uniform(0, cap))
