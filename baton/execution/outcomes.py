"""What perform() may return or raise besides a plain value: outcomes, not errors.

Each can be returned or raised; raising is handy deep inside helper functions.
"""

from __future__ import annotations


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
        if seconds < 0:
            raise ValueError(f"Snooze seconds must be >= 0, got {seconds}")
        self.seconds = float(seconds)
        super().__init__(f"snooze {self.seconds:g}s")


class Discard(Outcome):
    """Give up now, without retrying; dependents are cancelled unless they ignore it."""

    def __init__(self, reason: str = "discarded") -> None:
        self.reason = reason
        super().__init__(reason)
