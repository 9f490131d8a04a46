"""Hostile inputs: every outcome is recorded, every bad build input is a clear error.

One table per kind, to extend: an input, what must happen, and that nothing was lost or
half-written. Outcomes run on a real worker against real PostgreSQL.
"""

from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

import baton
from baton.models import StepDependency, StepResult, Workflow, WorkflowStep
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
        row = WorkflowStep.objects.get(workflow=workflow, name=case)
        assert row.state == state, (case, row.state, row.last_error)
        assert text in row.last_error or text in row.reason, (case, row.last_error, row.reason)
        assert runs[case] == 1, (case, runs[case])
        assert not StepResult.objects.filter(step=row).exists()
    assert WorkflowStep.objects.get(workflow=workflow, name="after").state == "completed"
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
    ("add_many(None)", lambda: _build().add_many("g", None), "specs must be a list or a dict"),
    ("add_many('')", lambda: _build().add_many("g", ""), "specs must be a list or a dict"),
    ("add_many of a number", lambda: _build().add_many("g", 3), "specs must be a list or a dict"),
    ("empty add_many", lambda: _build().add_many("g", []), "group 'g' has no steps"),
    ("group name ''", lambda: _build().add_many("", [Echo.new()]), "group name must be"),
    (
        "one-member group depending on itself",
        lambda: _build().add_many("g", [Echo.new()], deps=["g"]),
        "group 'g' depends on itself",
    ),
    (
        "group depending on itself",
        lambda: _build().add_many("g", [Echo.new(), Echo.new()], deps="g"),
        "group 'g' depends on itself",
    ),
    ("workflow_id=0", lambda: _build(workflow_id=0).add("a", Echo.new()), "workflow_id must be"),
    ("workflow_id=''", lambda: _build(workflow_id="").add("a", Echo.new()), "workflow_id must be"),
    (
        "malformed workflow_id",
        lambda: _build(workflow_id="1234-not-a-uuid").add("a", Echo.new()),
        "workflow_id must be",
    ),
    ("workflow_id=12", lambda: _build(workflow_id=12).add("a", Echo.new()), "workflow_id must be"),
    (
        "deps=None",
        lambda: _build().add("a", Echo.new()).add("b", Echo.new(), deps=None),
        "step 'b': deps must be a step or group name or a list",
    ),
    (
        "deps=123",
        lambda: _build().add("a", Echo.new()).add("b", Echo.new(), deps=123),
        "step 'b': deps must be a step or group name or a list",
    ),
    (
        "deps=[['a']]",
        lambda: _build().add("a", Echo.new()).add("b", Echo.new(), deps=[["a"]]),
        "step 'b': deps must be names (strings), got ['a']",
    ),
    (
        "deps as a dict",
        lambda: _build().add("a", Echo.new()).add("b", Echo.new(), deps={"a": 1}),
        "step 'b': deps must be a step or group name or a list",
    ),
    (
        "add_many deps=7",
        lambda: _build().add_many("g", [Echo.new()], deps=7),
        "group 'g': deps must be",
    ),
    ("debug='yes'", lambda: _build(debug="yes").add("a", Echo.new()), "debug must be True or"),
    ("debug=1", lambda: _build(debug=1).add("a", Echo.new()), "debug must be True or False"),
    (
        "ignore_discarded='no'",
        lambda: _build(ignore_discarded="no").add("a", Echo.new()),
        "ignore_discarded must be True or False",
    ),
    (
        "step ignore_cancelled='yes'",
        lambda: _build().add("a", Echo.new(), ignore_cancelled="yes"),
        "step 'a': ignore_cancelled must be None, True or False",
    ),
    ("budget Infinity", lambda: _build(budget_usd="Infinity").add("a", Echo.new()), "budget_usd"),
    ("budget -1", lambda: _build(budget_usd=-1).add("a", Echo.new()), "must not be negative"),
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
    assert not Workflow.objects.exists() and not WorkflowStep.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_lone_string_dependency_is_one_name() -> None:
    workflow = _build().add("ab", Echo.new()).add("c", Echo.new(), deps="ab").insert()
    assert list(
        StepDependency.objects.filter(workflow=workflow).values_list("upstream__name", flat=True)
    ) == ["ab"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_with_one_workflow_id_one_wins_the_others_are_told() -> None:
    """The exists() check cannot see an uncommitted insert of the same id: the primary
    key decides, and every loser gets InvalidWorkflow naming the id (not IntegrityError).
    A barrier lines the four inserts up; each holds its transaction open until all four
    have started, so they really overlap."""
    workflow_id = uuid.uuid4()
    barrier = threading.Barrier(4, timeout=30)
    outcomes: list[Any] = []

    def insert_one(index: int) -> None:
        try:
            with transaction.atomic():
                barrier.wait()
                builder = baton.new(f"racer-{index}", workflow_id=workflow_id)
                outcomes.append(builder.add("a", Echo.new()).insert())
        except Exception as exc:  # the outcome is what the test inspects
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=insert_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [o for o in outcomes if isinstance(o, Workflow)]
    losers = [o for o in outcomes if not isinstance(o, Workflow)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 3 and all(isinstance(o, baton.InvalidWorkflow) for o in losers), losers
    assert all(f"a workflow with id {workflow_id} already exists" in o.errors[0] for o in losers)
    # Only the winner's rows exist: one workflow, its one step.
    assert list(Workflow.objects.values_list("name", flat=True)) == [winners[0].name]
    assert WorkflowStep.objects.count() == 1


# Command arguments: argv -> the text of the CommandError naming the argument. A refused
# command changes nothing: the finished workflow below is still there afterwards.
COMMANDS: list[tuple[list[str], str]] = [
    (["prune", "--older-than=-1d"], "argument --older-than: bad duration '-1d'"),
    (["prune", "--older-than=nand"], "argument --older-than: bad duration"),
    (["prune", "--older-than=infh"], "argument --older-than: bad duration"),
    (["prune", "--older-than=7w"], "argument --older-than: bad duration '7w'"),
    (["sweep", "--stale-after=-1"], "argument --stale-after: must be more than 0 seconds"),
    (["sweep", "--stale-after=nan"], "argument --stale-after: 'nan' is not a finite number"),
    (["sweep", "--heartbeat-timeout=-5"], "argument --heartbeat-timeout: must be more than 0"),
    (["sweep", "--heartbeat-timeout=inf"], "argument --heartbeat-timeout: 'inf' is not a fin"),
    (["worker", "-c", "0"], "argument -c/--concurrency: must be at least 1, got '0'"),
    (["worker", "-c", "-3"], "argument -c/--concurrency: must be at least 1, got '-3'"),
    (["worker", "-c", "two"], "argument -c/--concurrency: 'two' is not a whole number"),
    (["worker", "--polling-interval", "-1"], "argument --polling-interval: must be more than 0"),
    (["worker", "--polling-interval", "0"], "argument --polling-interval: must be more than 0"),
    (["worker", "--heartbeat-interval", "nan"], "argument --heartbeat-interval: 'nan' is not"),
    (["worker", "--shutdown-graceful-timeout=-1"], "--shutdown-graceful-timeout: must be 0"),
    (["show", "abc", "--interval", "0"], "argument --interval: must be more than 0 seconds"),
    (["list", "--limit", "0"], "argument --limit: must be at least 1, got '0'"),
    (["list", "--since=-1d"], "bad --since '-1d'"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("argv", "message"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_bad_command_argument_is_named_and_changes_nothing(argv: list[str], message: str) -> None:
    finished = _build().add("a", Echo.new()).insert()
    Workflow.objects.filter(pk=finished.pk).update(
        state="completed", finished_at=timezone.now() - datetime.timedelta(days=30)
    )
    with pytest.raises(CommandError) as caught:
        call_command("baton", *argv, stdout=io.StringIO(), stderr=io.StringIO())
    assert message in str(caught.value), str(caught.value)
    assert Workflow.objects.filter(pk=finished.pk).exists()


def test_bad_command_argument_on_the_command_line_exits_2_with_usage() -> None:
    """From a shell, Django prints the usage and the named argument, and exits 2."""
    result = subprocess.run(
        [sys.executable, "-m", "django", "baton", "worker", "-c", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=Path(baton.__file__).resolve().parent.parent,  # the checkout, for tests.settings
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "argument -c/--concurrency: must be at least 1, got '0'" in result.stderr
