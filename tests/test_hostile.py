"""Hostile inputs: every outcome is recorded, every bad build input is a clear error.

One table per kind, to extend: an input, what must happen, and that nothing was lost or
half-written. Outcomes run on a real worker against real PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import baton
from baton.models import Step, StepResult, Workflow
from baton.testing import wait_for_workflow
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Echo, Hostile

# case -> (state, text that must be in last_error or reason). Every one with max_attempts
# 1: exactly one perform() run, then a terminal state with the error stored.
OUTCOMES: dict[str, tuple[str, str]] = {
    "nul_result": ("discarded", "NUL character, which PostgreSQL cannot store"),
    "nul_key": ("discarded", "dict key 'a\\x00' contains a NUL character"),
    "surrogate_result": ("discarded", "unpaired surrogate"),
    "deep_result": ("discarded", "nested too deeply"),
    "nul_exception": ("discarded", "ValueError: bad\\x00value"),
    "nul_error": ("discarded", "reason\\x00here"),
    "nul_discard": ("discarded", "gone\\x00now"),
    "surrogate_exception": ("discarded", "ValueError: bad\ufffdvalue"),
    "unprintable_exception": ("discarded", "_BadStr (its message could not be read)"),
    "snooze_inf": ("discarded", "Snooze seconds must be a number from 0 to"),
    "snooze_nan": ("discarded", "Snooze seconds must be a number from 0 to"),
    "snooze_huge": ("discarded", "Snooze seconds must be a number from 0 to"),
}


@pytest.mark.worker
def test_every_hostile_outcome_is_recorded_in_one_attempt(start_worker: Any) -> None:
    start_worker(concurrency=4)
    builder = baton.new("hostile", ignore_discarded=True)
    for case in OUTCOMES:
        builder.add(case, Hostile.new(case=case))
    builder.add("after", Echo.new(value="still runs"), deps=list(OUTCOMES))
    workflow = wait_for_workflow(builder.insert(), timeout=90)
    runs = Counter(
        PerformRun.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )
    for case, (state, text) in OUTCOMES.items():
        row = Step.objects.get(workflow=workflow, name=case)
        assert row.state == state, (case, row.state, row.last_error)
        assert text in row.last_error or text in row.reason, (case, row.last_error, row.reason)
        assert runs[case] == 1, (case, runs[case])
        assert not StepResult.objects.filter(step=row).exists()
    assert Step.objects.get(workflow=workflow, name="after").state == "completed"
    # `after` ignores discarded dependencies: the failures are absorbed.
    assert workflow.state == "completed"


# builder input -> text of the InvalidWorkflow error that names it. Nothing is written.
def _build(**kwargs: Any) -> Any:
    return baton.new(kwargs.pop("workflow_name", "w"), **kwargs)


BUILDS: list[tuple[str, Any, str]] = [
    ("NUL in a step name", lambda: _build().add("a\x00", Echo.new()), "NUL character"),
    ("surrogate in a name", lambda: _build().add("a\ud800", Echo.new()), "unpaired surrogate"),
    ("whitespace-only name", lambda: _build().add("  ", Echo.new()), "non-empty string"),
    ("NUL in args", lambda: _build().add("a", Echo.new(value="x\x00")), "NUL character"),
    ("NUL in an args key", lambda: _build().add("a", Echo.new(**{"k\x00": 1})), "NUL"),
    (
        "NUL in the workflow name",
        lambda: _build(workflow_name="w\x00").add("a", Echo.new()),
        "workflow_name contains a NUL",
    ),
    (
        "NUL in a lock",
        lambda: _build().add("a", Echo.new().with_options(lock="l\x00")),
        "lock must be None or a string",
    ),
    (
        "priority out of int32",
        lambda: _build().add("a", Echo.new().with_options(priority=2**40)),
        "priority must be an int between",
    ),
    ("budget 'abc'", lambda: _build(budget_usd="abc").add("a", Echo.new()), "budget_usd"),
    ("budget NaN", lambda: _build(budget_usd=float("nan")).add("a", Echo.new()), "budget_usd"),
    ("budget True", lambda: _build(budget_usd=True).add("a", Echo.new()), "budget_usd"),
    ("budget 1e20", lambda: _build(budget_usd=1e20).add("a", Echo.new()), "less than"),
    (
        "budget below the stored precision",
        lambda: _build(budget_usd="0.0000004").add("a", Echo.new()),
        "more than 6 decimal places",
    ),
    (
        "a model listed twice",
        lambda: _build().fan_out("ask", Echo, models=["m", "m"]),
        "more than once",
    ),
    ("deep args", lambda: _build().add("a", Echo.new(value=_deep_args())), "nested too deeply"),
]


def _deep_args() -> Any:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    return value


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("label", "build", "message"), BUILDS, ids=[b[0] for b in BUILDS])
def test_bad_build_input_is_named_and_writes_nothing(label: str, build: Any, message: str) -> None:
    with pytest.raises(baton.InvalidWorkflow) as caught:
        build().insert()
    assert any(message in error for error in caught.value.errors), caught.value.errors
    assert not Workflow.objects.exists() and not Step.objects.exists()
