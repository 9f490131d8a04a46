"""Retry and backoff decisions: pure functions of the attempt number."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 300.0,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Delay before the attempt after `attempt` (1-based): base * factor**(attempt-1), capped.

    `jitter` in [0, 1] spreads the delay over [delay * (1 - jitter), delay] so that many
    steps failing together do not retry together.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    try:
        delay = min(cap, base * factor ** (attempt - 1))
    except OverflowError:  # float ** int raises rather than giving inf for large attempts
        delay = cap
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return float(delay)


def should_retry(attempt: int, max_attempts: int) -> bool:
    """Whether a failed `attempt` (1-based) leaves attempts to spend."""
    return attempt < max_attempts


def full_jitter_backoff(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """ "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): a delay
    drawn uniformly from [0, min(cap, base * factor**(attempt-1))].

    Many clients hitting the same rate limit at once spread their retries over the whole
    window instead of returning together.
    """
    ceiling = backoff_seconds(attempt, base=base, factor=factor, cap=cap)
    return float((rng or random).uniform(0.0, ceiling))
