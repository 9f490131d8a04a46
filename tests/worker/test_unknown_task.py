"""A step class that one worker does not have (its code reached the web process and some
workers first): that worker hands the step back instead of failing it, says why, and a
worker that has the class runs it, once. The sweep never discards such a step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

import baton
from baton.execution.registry import registry
from baton.explain import explain
from baton.models import WorkflowStep
from baton.sweep import sweep
from baton.testing import wait_for_workflow
from tests.testapp.late_tasks import LateStep
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.worker


def _wait(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _job(step: WorkflowStep) -> tuple[str, int] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status::text, attempts FROM procrastinate_jobs WHERE id = %s", [step.job_id]
        )
        return cursor.fetchone()


def test_a_worker_without_the_step_class_hands_it_back_and_one_with_it_runs_it(
    start_worker: Any,
) -> None:
    lacking = start_worker(concurrency=2, polling_interval=0.2)
    builder = baton.new("deploy-in-progress")
    builder.add("first", Echo.new(value=1))
    builder.add("late", LateStep.new(), deps=["first"])
    builder.add("after", Echo.new(value=2), deps=["late"])
    workflow = builder.insert()

    def handed_back() -> WorkflowStep | None:
        step = WorkflowStep.objects.get(workflow=workflow, name="late")
        job = _job(step) if step.job_id else None
        # Fetched once by the worker that lacks the class, and given back: not failed.
        return step if job and job[0] == "todo" and job[1] >= 1 else None

    step = _wait(handed_back, what="the lacking worker to hand the step back")
    assert step.state == "available" and step.attempt == 0, (step.state, step.attempt)
    assert not PerformRun.objects.filter(workflow_id=workflow.pk, step="late").exists()
    why = " ".join(explain(step).sentences)
    assert "does not have task 'tests.testapp.late_tasks.LateStep'" in why, why
    # The sweep leaves it alone: another worker may have the class.
    report = sweep(prune_after=False)
    assert report.discarded == [], report.discarded
    assert WorkflowStep.objects.get(pk=step.pk).state == "available"
    assert "is not registered in this worker" in _wait(
        lambda: (
            "is not registered in this worker" in lacking.log_tail(200) and lacking.log_tail(200)
        ),
        what="the lacking worker's warning",
    )

    having = start_worker(
        concurrency=2, polling_interval=0.2, env={"BATON_TEST_IMPORT": "tests.testapp.late_tasks"}
    )
    workflow = wait_for_workflow(workflow, timeout=90)
    assert workflow.state == "completed"
    late = WorkflowStep.objects.get(pk=step.pk)
    assert late.state == "completed" and late.attempt == 1
    runs = list(PerformRun.objects.filter(workflow_id=workflow.pk, step="late"))
    assert [run.pid for run in runs] == [having.pid]
    # Handed back once, then run once: the lacking worker never took it again (it used to,
    # each time it fell due, pushing it further out each time).
    assert _job(late) == ("succeeded", 2)


@pytest.mark.django_db(transaction=True)
def test_the_sweep_requeues_a_lost_step_whose_class_this_process_lacks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, such a step was discarded as "pruned ... no longer registered"."""
    workflow = baton.new("lost-job").add("late", LateStep.new()).insert()
    step = WorkflowStep.objects.get(workflow=workflow)
    with connection.cursor() as cursor:  # its job vanished (deleted by hand, pruned)
        cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s", [step.job_id])
    # This process (say, a web server running `baton sweep`) does not have the class.
    monkeypatch.delitem(registry, LateStep.task_name)
    with caplog.at_level(logging.WARNING, logger="baton"):
        report = sweep(prune_after=False)
    assert report.discarded == [] and report.rescued == ["lost-job/late"], report
    step.refresh_from_db()
    assert step.state == "available" and step.job_id is not None
    assert _job(step) == ("todo", 0)
    assert "tests.testapp.late_tasks.LateStep" in caplog.text
