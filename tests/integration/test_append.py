"""baton.append(workflow): growing a running workflow, against real PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections

import baton
from baton.models import StepDependency, Workflow, WorkflowStep
from baton.testing import wait_for_workflow
from tests.helpers import run_step
from tests.testapp.tasks import Collect, Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")


def step(workflow: Any, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def test_appended_steps_wait_for_unfinished_deps_and_not_for_completed_ones() -> None:
    workflow = baton.new("grow").add("a", Echo.new(value="a")).add("b", Echo.new()).insert()
    run_step(workflow, "a")
    workflow = (
        baton.append(workflow)
        .add("after_a", Collect.new(), deps=["a"])
        .add("after_both", Collect.new(), deps=["a", "b"])
        .add_many("more", [Echo.new(value=i) for i in range(2)], deps=["after_a"])
        .insert()
    )
    assert (workflow.step_count, workflow.unfinished_steps) == (6, 5)
    assert step(workflow, "after_a").state == "available"  # a completed: nothing to wait for
    both = step(workflow, "after_both")
    assert (both.state, both.deps_total, both.deps_pending) == ("waiting", 2, 1)
    run_step(workflow, "b")
    assert step(workflow, "after_both").state == "available"
    from baton.results import load_dependency_results

    # What its perform() would read: both results (run_step stores the step's name).
    seen = load_dependency_results(step(workflow, "after_both").id)
    assert {name: row[3] for name, row in seen.items()} == {"a": "a", "b": "b"}


def test_a_bad_append_writes_nothing() -> None:
    workflow = baton.new("strict").add("a", Echo.new()).insert()
    before = (WorkflowStep.objects.count(), StepDependency.objects.count())
    cases = [
        (baton.append(workflow).add("a", Echo.new()), "duplicate step name 'a'"),
        (baton.append(workflow).add("x", Echo.new(), deps=["nope"]), "unknown step 'nope'"),
        (
            baton.append(workflow)
            .add("x", Echo.new(), deps=["y"])
            .add("y", Echo.new(), deps=["x"]),
            "dependency cycle",
        ),
        (baton.append(workflow), "at least one step"),
    ]
    for builder, message in cases:
        with pytest.raises(baton.InvalidWorkflow) as caught:
            builder.insert()
        assert any(message in error for error in caught.value.errors), caught.value.errors
    assert (WorkflowStep.objects.count(), StepDependency.objects.count()) == before
    workflow.refresh_from_db()
    assert workflow.step_count == 1


def test_appending_to_a_finished_workflow_is_refused() -> None:
    workflow = baton.new("done").add("a", Echo.new()).insert()
    run_step(workflow, "a")
    with pytest.raises(baton.BatonError, match="is completed; only an executing workflow"):
        baton.append(workflow).add("late", Echo.new(), deps=["a"]).insert()
    assert not WorkflowStep.objects.filter(name="late").exists()


def test_a_dep_that_failed_is_refused() -> None:
    from baton.execution import advance

    workflow = baton.new("failing").add("a", Echo.new()).add("b", Echo.new()).insert()
    run_step(workflow, "a", advance.Discarded(reason="no"))
    with pytest.raises(baton.InvalidWorkflow, match="cannot depend on 'a': it is discarded"):
        baton.append(workflow).add("x", Echo.new(), deps=["a"]).insert()


@pytest.mark.worker
def test_appending_while_deps_complete_releases_every_step_once(start_worker: Any) -> None:
    """Appends race the completions of the steps they depend on: every appended step
    still runs, exactly once."""
    start_worker(concurrency=4)
    workflow = (
        baton.new("race")
        .add_many("src", [Echo.new(value=i, sleep=0.01 * (i % 5)) for i in range(40)])
        .add("hold", Echo.new(sleep=3))  # keeps the workflow executing meanwhile
        .insert()
    )
    errors: list[BaseException] = []

    def grow(offset: int) -> None:
        try:
            for i in range(offset, 40, 4):
                baton.append(workflow).add(
                    f"after[{i}]", Collect.new(), deps=[f"src[{i}]"]
                ).insert()
        except BaseException as exc:  # pragma: no cover - shown below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=grow, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed" and workflow.step_count == 81
    for i in range(40):
        assert step(workflow, f"after[{i}]").result_value() == {"seen": {f"src[{i}]": i}}
    from tests.testapp.models import PerformRun

    runs = PerformRun.objects.filter(workflow_id=workflow.pk, step__startswith="after")
    assert runs.count() == 40


def test_appended_workflow_row_counts_match_its_steps() -> None:
    workflow = baton.new("counts").add("a", Echo.new()).insert()
    baton.append(workflow).add_many("g", [Echo.new() for _ in range(3)], deps=["a"]).insert()
    workflow = Workflow.objects.get(pk=workflow.pk)
    assert workflow.step_count == WorkflowStep.objects.filter(workflow=workflow).count() == 4


def test_the_sweep_releases_a_waiting_step_whose_deps_all_completed() -> None:
    """The backstop: a step left waiting although its dependency completed (as a missed
    release would leave it) is released by the sweep."""
    from baton.sweep import sweep

    workflow = baton.new("backstop").add("a", Echo.new()).add("b", Echo.new(), deps=["a"]).insert()
    run_step(workflow, "a")
    # What a missed release looks like: b still counts a as pending.
    WorkflowStep.objects.filter(workflow=workflow, name="b").update(state="waiting", deps_pending=1)
    report = sweep(prune_after=None)
    assert report.released == 1
    assert step(workflow, "b").state == "available"
