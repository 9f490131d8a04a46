"""Execution against real PostgreSQL and a real worker process: every outcome row."""

from __future__ import annotations

from itertools import pairwise

import pytest

import baton
from baton.models import StepResult, Workflow
from baton.testing import assert_completed, wait_for_workflow
from tests.helpers import step_row as step
from tests.testapp.models import PerformRun
from tests.testapp.tasks import (
    AsyncEcho,
    BigResult,
    Collect,
    Discarder,
    Echo,
    Flaky,
    ReturnsError,
    Snoozer,
    Unserialisable,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def runs(workflow: Workflow, step: str) -> list[PerformRun]:
    return list(PerformRun.objects.filter(workflow_id=workflow.pk, step=step).order_by("id"))


def test_chain_passes_results_downstream_in_order(worker):
    workflow = (
        baton.new("chain")
        .add("a", Echo.new(value={"n": 1}))
        .add("b", Collect.new(), deps=["a"])
        .add("c", Collect.new(), deps=["b"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    assert step(workflow, "b").result_value() == {"seen": {"a": {"n": 1}}}
    assert step(workflow, "c").result_value() == {"seen": {"b": {"seen": {"a": {"n": 1}}}}}
    a, b, c = runs(workflow, "a")[0], runs(workflow, "b")[0], runs(workflow, "c")[0]
    assert a.finished <= b.started and b.finished <= c.started


def test_returning_none_stores_no_result(worker):
    workflow = baton.new("none").add("a", Echo.new()).add("b", Collect.new(), deps="a").insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    assert not StepResult.objects.filter(step__workflow=workflow, step__name="a").exists()
    assert step(workflow, "b").result_value() == {"seen": {}}


def test_exception_is_retried_then_succeeds(worker):
    workflow = baton.new("flaky").add("f", Flaky.new(succeed_on=3)).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    f = step(workflow, "f")
    assert f.attempt == 3
    assert f.result_value() == {"attempt": 3}
    assert [r.attempt for r in runs(workflow, "f")] == [1, 2, 3]
    assert "flaky failure on attempt 2" in f.last_error
    assert "RuntimeError" in f.traceback


def test_exception_past_max_attempts_discards_and_cancels_dependents(worker):
    workflow = (
        baton.new("doomed")
        .add("f", Flaky.new(succeed_on=99))
        .add("after", Echo.new(), deps=["f"])
        .add("later", Echo.new(), deps=["after"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert workflow.state == "failed"
    f = step(workflow, "f")
    assert f.state == "discarded" and f.attempt == 3
    assert "failed after 3 attempt(s)" in f.reason
    assert "flaky failure on attempt 3" in f.last_error
    assert step(workflow, "after").state == "cancelled"
    assert step(workflow, "after").reason == "dep f discarded"
    assert step(workflow, "later").reason == "dep after cancelled"
    assert runs(workflow, "after") == []
    assert workflow.failed_steps == ["f", "after", "later"]


def test_returned_error_is_retried_until_max_attempts(worker):
    workflow = baton.new("err").add("e", ReturnsError.new()).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    e = step(workflow, "e")
    assert e.state == "discarded" and e.attempt == 2
    assert e.last_error == "upstream said no"
    assert len(runs(workflow, "e")) == 2


def test_snooze_runs_again_without_consuming_an_attempt(worker):
    workflow = baton.new("snooze").add("s", Snoozer.new(times=2, seconds=0.3)).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    s = step(workflow, "s")
    assert s.result_value() == {"runs": 3, "attempt": 1}
    assert s.snoozes == 2 and s.attempt == 1
    starts = [r.started for r in runs(workflow, "s")]
    assert all(later - earlier >= 0.29 for earlier, later in pairwise(starts))


def test_discard_gives_up_at_once(worker):
    workflow = (
        baton.new("discard")
        .add("d", Discarder.new(reason="bad input row 7"))
        .add("next", Echo.new(), deps=["d"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    d = step(workflow, "d")
    assert d.state == "discarded" and d.reason == "bad input row 7" and d.attempt == 1
    assert step(workflow, "next").reason == "dep d discarded"
    assert workflow.state == "failed"


def test_ignore_discarded_lets_dependents_run(worker):
    workflow = (
        baton.new("ignore")
        .add("d", Discarder.new())
        .add("ok", Echo.new(value=1))
        .add("join", Collect.new(), deps=["d", "ok"], ignore_discarded=True)
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert step(workflow, "join").state == "completed"
    assert step(workflow, "join").result_value() == {"seen": {"ok": 1}}
    # The discard was absorbed by the only dependent's policy.
    assert_completed(workflow)


def test_ignore_cancelled_workflow_default(worker):
    workflow = (
        baton.new("ignore-cancelled", ignore_cancelled=True)
        .add("d", Discarder.new())
        .add("mid", Echo.new(), deps=["d"], ignore_cancelled=False)
        .add("end", Echo.new(value="ran"), deps=["mid"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert step(workflow, "mid").state == "cancelled"
    assert step(workflow, "end").state == "completed"


def test_async_perform(worker):
    workflow = (
        baton.new("async")
        .add("a", AsyncEcho.new(value=1, sleep=0.01))
        .add("b", AsyncEcho.new(value=2), deps=["a"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    assert step(workflow, "b").result_value() == {
        "value": 2,
        "upstream": {"a": {"value": 1, "upstream": {}}},
    }


def test_result_over_limit_is_a_clear_error(worker, settings):
    workflow = baton.new("big").add("b", BigResult.new(size=2_000_000)).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    b = step(workflow, "b")
    assert b.state == "discarded"
    assert "RESULT_MAX_BYTES" in b.last_error and "'b'" in b.last_error
    assert not StepResult.objects.filter(step=b).exists()


def test_unserialisable_result_is_a_clear_error(worker):
    workflow = baton.new("weird").add("u", Unserialisable.new()).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    u = step(workflow, "u")
    assert u.state == "discarded" and "not JSON-serialisable" in u.last_error


def test_fan_out_fan_in_with_group_results(worker):
    workflow = (
        baton.new("fan")
        .add("root", Echo.new(value=0))
        .add_many("parts", {f"k{i}": Echo.new(value=i) for i in range(20)}, deps=["root"])
        .add("join", Collect.new(group="parts"), deps=["parts"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert_completed(workflow)
    assert step(workflow, "join").result_value() == {"seen": {f"k{i}": i for i in range(20)}}
    assert len(runs(workflow, "join")) == 1
