"""workflow.cancel() and workflow.retry() on workflows run by a real worker process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

import baton
from baton import signals
from baton.models import StepResult, Workflow, WorkflowStep
from baton.testing import WorkerProcess, assert_completed, wait_for_workflow
from tests.helpers import runs_per_step, wait_until
from tests.helpers import step_row as step
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Collect, DiscardsFirstRuns, Echo, FailsFirstRuns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

StartWorker = Callable[..., WorkerProcess]


def job_statuses(workflow: Workflow) -> dict[str, list[str]]:
    """{step name: statuses of every Procrastinate job created for it}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT args->>'step', status FROM procrastinate_jobs "
            "WHERE args->>'workflow_id' = %s ORDER BY id",
            [str(workflow.pk)],
        )
        statuses: dict[str, list[str]] = {}
        for name, status in cursor.fetchall():
            statuses.setdefault(name, []).append(status)
    return statuses


@pytest.fixture
def finished_signals() -> Iterator[list[tuple[Any, str]]]:
    received: list[tuple[Any, str]] = []

    def receiver(sender: Any, workflow: Workflow, state: str, **_: Any) -> None:
        received.append((workflow.pk, state))

    signals.workflow_finished.connect(receiver)
    yield received
    signals.workflow_finished.disconnect(receiver)


def test_cancel_running_workflow(
    start_worker: StartWorker, finished_signals: list[tuple[Any, str]]
) -> None:
    workflow = (
        baton.new("to-cancel")
        .add("slow", Echo.new(sleep=1.5, value="slow"))
        .add("b", Echo.new(), deps=["slow"])
        .add("c", Echo.new(), deps=["slow"])
        .add("d", Collect.new(), deps=["b", "c"])
        # Queued but never picked up: the worker does not listen to its queue.
        .add("parked", Echo.new().with_options(queue="parked"))
        .insert()
    )
    start_worker(concurrency=2, queues=["default"])
    wait_until(lambda: step(workflow, "slow").state == "executing", "slow to start")

    assert workflow.cancel() == 5
    assert workflow.state == "cancelled"
    # Nothing is left running in the finished workflow, the executing step included.
    for name in ("slow", "b", "c", "d", "parked"):
        cancelled = step(workflow, name)
        assert cancelled.state == "cancelled" and cancelled.reason == "workflow cancelled"
    assert finished_signals == [(workflow.pk, "cancelled")]
    # The parked step's queued job is cancelled in Procrastinate too.
    assert job_statuses(workflow)["parked"] == ["cancelled"]

    # The running step's perform() ends (a sync step is not interrupted) and its return
    # changes nothing: fenced by the cancellation.
    wait_until(
        lambda: all(
            status not in ("todo", "doing")
            for statuses in job_statuses(workflow).values()
            for status in statuses
        ),
        "the workflow's jobs to settle",
    )
    assert runs_per_step(workflow) == Counter({"slow": 1})
    assert set(job_statuses(workflow)) == {"slow", "parked"}  # no job for b, c or d
    slow = step(workflow, "slow")
    assert slow.state == "cancelled" and not StepResult.objects.filter(step=slow).exists()
    workflow.refresh_from_db()
    assert workflow.state == "cancelled" and workflow.unfinished_steps == 0
    assert finished_signals == [(workflow.pk, "cancelled")]
    assert workflow.cancel() == 0  # already finished


def test_retry_after_discard_reruns_only_what_failed(start_worker: StartWorker) -> None:
    workflow = (
        baton.new("retry-discard")
        .add("ok", Echo.new(value=1))
        .add("side", Echo.new(value=2))
        .add("d", DiscardsFirstRuns.new(discards=1, value="second"), deps=["ok"])
        .add("after", Collect.new(), deps=["d", "side"])
        .add("last", Collect.new(), deps=["after"])
        .insert()
    )
    start_worker(concurrency=2)
    workflow = wait_for_workflow(workflow, timeout=30)
    assert workflow.state == "failed"
    assert step(workflow, "d").state == "discarded"
    assert step(workflow, "d").reason == "discarded on run 1"
    assert step(workflow, "after").reason == "dep d discarded"
    assert step(workflow, "last").reason == "dep after cancelled"
    assert workflow.failed_steps == ["d", "after", "last"]
    kept = {r.step_id: r.created_at for r in StepResult.objects.filter(step__workflow=workflow)}

    assert workflow.retry() == 3
    assert workflow.state == "executing" and workflow.failed_steps == []
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)

    # Completed steps did not run again and kept their results.
    assert runs_per_step(workflow) == Counter({"ok": 1, "side": 1, "d": 2, "after": 1, "last": 1})
    for step_id, created_at in kept.items():
        assert StepResult.objects.get(step_id=step_id).created_at == created_at
    d = step(workflow, "d")
    assert (d.state, d.attempt, d.reason) == ("completed", 1, "")
    assert step(workflow, "after").result_value() == {"seen": {"d": "second", "side": 2}}
    assert step(workflow, "last").result_value() == {
        "seen": {"after": {"seen": {"d": "second", "side": 2}}}
    }


def test_retry_of_a_step_that_failed_its_only_attempt(start_worker: StartWorker) -> None:
    workflow = (
        baton.new("retry-failure")
        .add("f", FailsFirstRuns.new(failures=1, value="fixed"))
        .add("next", Collect.new(), deps=["f"])
        .insert()
    )
    start_worker(concurrency=2)
    workflow = wait_for_workflow(workflow, timeout=30)
    assert workflow.state == "failed"
    f = step(workflow, "f")
    assert f.state == "discarded" and f.attempt == 1
    assert f.reason == "failed after 1 attempt(s): RuntimeError: failure on run 1"
    assert step(workflow, "next").state == "cancelled"

    assert workflow.retry() == 2
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    assert runs_per_step(workflow) == Counter({"f": 2, "next": 1})
    assert step(workflow, "f").result_value() == "fixed"
    assert step(workflow, "next").result_value() == {"seen": {"f": "fixed"}}
    assert workflow.retry() == 0  # nothing left to retry


def test_cancel_fences_a_sync_straggler_and_retry_reruns_it(start_worker: StartWorker) -> None:
    """Cancel during a long sync step that ignores should_abort(): everything is terminal
    when cancel() returns; the straggler's return writes nothing; retry() re-runs it."""
    workflow = (
        baton.new("straggler")
        .add("long", Echo.new(sleep=4, value="late"))
        .add("after", Collect.new(), deps=["long"])
        .insert()
    )
    start_worker(concurrency=2, queues=["default"])
    wait_until(lambda: step(workflow, "long").state == "executing", "long to start")
    assert workflow.cancel() == 2
    states = dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state"))
    assert states == {"long": "cancelled", "after": "cancelled"}
    workflow.refresh_from_db()
    assert (workflow.state, workflow.unfinished_steps) == ("cancelled", 0)
    version = step(workflow, "long").version

    # The straggler returns: its completion fails the fence.
    wait_until(
        lambda: PerformRun.objects.filter(
            workflow_id=workflow.pk, step="long", finished__isnull=False
        ).exists(),
        "the straggler's perform to return",
        timeout=30,
    )
    wait_until(lambda: "doing" not in job_statuses(workflow).get("long", []), "its job to end")
    long = step(workflow, "long")
    assert (long.state, long.version) == ("cancelled", version)
    assert not StepResult.objects.filter(step__workflow=workflow).exists()
    assert step(workflow, "after").state == "cancelled"

    assert workflow.retry() == 2
    workflow = wait_for_workflow(workflow, timeout=60)
    assert_completed(workflow)
    assert step(workflow, "after").result_value() == {"seen": {"long": "late"}}
    assert runs_per_step(workflow) == Counter({"long": 2, "after": 1})


def test_retry_named_steps_reruns_only_them_and_what_they_cancelled(
    start_worker: StartWorker,
) -> None:
    workflow = (
        baton.new("partial-retry")
        .add("bad", DiscardsFirstRuns.new(discards=1, value="bad fixed"))
        .add("bad_child", Collect.new(), deps=["bad"])
        .add("other", DiscardsFirstRuns.new(discards=1, value="other fixed"))
        .add("other_child", Collect.new(), deps=["other"])
        .insert()
    )
    start_worker(concurrency=2, queues=["default"])
    workflow = wait_for_workflow(workflow, timeout=30)
    assert workflow.state == "failed"
    assert sorted(workflow.failed_steps) == ["bad", "bad_child", "other", "other_child"]

    with pytest.raises(baton.BatonError) as refused:
        workflow.retry(steps=["bad_child"])  # its dependency stays discarded
    assert "'bad_child' depends on 'bad' (discarded): retry 'bad' too" in str(refused.value)
    with pytest.raises(baton.BatonError, match="'nope' is not a step"):
        workflow.retry(steps=["nope"])
    assert workflow.retry(steps=["bad"]) == 2  # bad and the child it cancelled
    workflow = wait_for_workflow(workflow, timeout=30)
    states = dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state"))
    assert states == {
        "bad": "completed",
        "bad_child": "completed",
        "other": "discarded",
        "other_child": "cancelled",
    }
    assert workflow.state == "failed"
    assert sorted(workflow.failed_steps) == ["other", "other_child"]
    assert step(workflow, "bad_child").result_value() == {"seen": {"bad": "bad fixed"}}
    assert workflow.retry(steps=["other"]) == 2
    assert_completed(wait_for_workflow(workflow, timeout=30))
