"""LLM steps' backoff and defaults: pure, no database."""

from __future__ import annotations

import random
import statistics

import pytest

import baton
from baton.graph.policy import full_jitter_backoff
from tests.testapp.tasks import FakeModelCall


def test_full_jitter_backoff_is_uniform_under_the_exponential_ceiling() -> None:
    rng = random.Random(8)
    samples = [full_jitter_backoff(3, base=2.0, cap=120.0, rng=rng) for _ in range(20_000)]
    ceiling = 2.0 * 2**2  # base * 2**(attempt-1)
    assert all(0.0 <= s <= ceiling for s in samples)
    assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.02)
    # Kolmogorov-Smirnov distance to uniform(0, ceiling); 1.63/sqrt(n) is the 1% level.
    ordered = sorted(s / ceiling for s in samples)
    n = len(ordered)
    distance = max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(ordered))
    assert distance < 1.63 / n**0.5
    # Spread over the whole window: the slowest decile is as full as the fastest.
    assert sum(s < ceiling / 10 for s in samples) > n / 12
    assert sum(s > ceiling * 0.9 for s in samples) > n / 12


def test_full_jitter_backoff_respects_the_cap() -> None:
    rng = random.Random(1)
    samples = [full_jitter_backoff(40, base=2.0, cap=10.0, rng=rng) for _ in range(2_000)]
    assert max(samples) <= 10.0
    assert max(samples) > 9.0  # the ceiling is the cap, not something smaller


def test_llm_step_defaults() -> None:
    assert FakeModelCall.queue == "llm"
    assert baton.LLMStep.max_attempts == 5
    assert baton.LLMStep.timeout == 120.0
    delays = [FakeModelCall().backoff(2) for _ in range(200)]
    assert min(delays) >= 0 and max(delays) <= 0.1
