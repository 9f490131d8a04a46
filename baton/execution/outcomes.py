"""What perform() may return or raise besides a plain value: outcomes, not errors.

Each can be returned or raised; raising is handy deep inside helper functions.
"""

from __future__ import annotations

import math

MAX_SNOOZE_SECONDS = 365 * 24 * 3600.0


class Outcome(Exception):
    """Base of the explicit outcomes of a step."""


class Error(Outcome):
    """A failed attempt: retried with backoff until max_attempts, then discarded."""

    def __init__(self, reason: str = "error") -> None:
        self.reason = reason
        super().__init__(reason)


class Snooze(Outcome):
    """Not ready yet: run again after `seconds`, without consuming an attempt."""

    def __init__(self, seconds: float) -> None:
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_SNOOZE_SECONDS
        ):
            raise ValueError(
                f"Snooze seconds must be a number from 0 to {MAX_SNOOZE_SECONDS:,.0f} "
                f"(a year), got {seconds!r}"
            )
        self.seconds = float(seconds)
        super().__init__(f"snooze {self.seconds:g}s")


class Discard(Outcome):
    """Give up now, without retrying; dependents are cancelled unless they ignore it."""

    def __init__(self, reason: str = "discarded") -> None:
        self.reason = reason
        super().__init__(reason)
