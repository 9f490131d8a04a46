"""The sweep, deterministically: states a crash would leave, built by hand, then repaired."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

import baton
from baton import signals
from baton.execution import advance
from baton.models import Workflow, WorkflowStep
from baton.sweep import prune_workflows, sweep
from baton.testing import assert_completed, wait_for_workflow
from tests.helpers import job_status
from tests.testapp.tasks import Echo, Flaky

pytestmark = pytest.mark.django_db(transaction=True)


def chain(first=None) -> Workflow:
    return (
        baton.new("sweepable")
        .add("a", first or Echo.new(value=1))
        .add("b", Echo.new(value=2), deps=["a"])
        .insert()
    )


@pytest.fixture
def rescued_signals():
    received = []

    def receiver(sender, steps, **kwargs):
        received.extend(step.name for step in steps)

    signals.steps_rescued.connect(receiver)
    yield received
    signals.steps_rescued.disconnect(receiver)


def test_deleted_jobs_are_re_enqueued_and_reported(clean_jobs, rescued_signals, start_worker):
    workflow = chain()
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s", [a.job_id])

    report = sweep()

    assert report.rescued == ["sweepable/a"]
    assert rescued_signals == ["a"]
    a.refresh_from_db()
    assert a.state == "available" and job_status(a.job_id) == "todo"
    start_worker(concurrency=2)
    assert_completed(wait_for_workflow(workflow, timeout=30))


def test_a_healthy_workflow_is_left_alone(clean_jobs):
    workflow = chain()
    before = list(WorkflowStep.objects.filter(workflow=workflow).values_list("state", "job_id"))
    report = sweep()
    assert report.rescued == [] and report.discarded == [] and report.workflows_finished == 0
    after = list(WorkflowStep.objects.filter(workflow=workflow).values_list("state", "job_id"))
    assert before == after


def test_step_executing_after_its_job_ended_is_re_run(clean_jobs, start_worker):
    """A restart cut the finishing transaction, but Procrastinate marked the job done."""
    workflow = chain(Flaky.new(succeed_on=1))
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    claimed = advance.claim(a.id, a.job_id)
    assert claimed is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT procrastinate_finish_job_v1(%s, 'succeeded'::procrastinate_job_status, false)",
            [a.job_id],
        )

    report = sweep()

    assert report.rescued == ["sweepable/a"]
    a.refresh_from_db()
    assert a.state == "available" and a.job_id != claimed.job_id
    start_worker(concurrency=2)
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    a.refresh_from_db()
    assert a.attempt == 2  # the lost attempt counts


def test_step_executing_with_vanished_job_waits_for_stale_after(clean_jobs):
    workflow = chain(Flaky.new(succeed_on=1))
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    advance.claim(a.id, a.job_id)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s", [a.job_id])

    assert sweep(stale_executing_after=600).rescued == []
    WorkflowStep.objects.filter(pk=a.pk).update(
        started_at=timezone.now() - datetime.timedelta(hours=1)
    )
    assert sweep(stale_executing_after=600).rescued == ["sweepable/a"]


def test_lost_last_attempt_is_discarded_and_cascades(clean_jobs):
    workflow = chain()
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    assert a.max_attempts == 1
    advance.claim(a.id, a.job_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT procrastinate_finish_job_v1(%s, 'failed'::procrastinate_job_status, false)",
            [a.job_id],
        )

    report = sweep()

    assert report.discarded == ["sweepable/a"]
    workflow.refresh_from_db()
    assert workflow.state == "failed"
    b = WorkflowStep.objects.get(workflow=workflow, name="b")
    assert b.state == "cancelled" and b.reason == "dep a discarded"


def test_forgotten_workflow_is_finished_once(clean_jobs):
    finished = []

    def receiver(sender, workflow, state, **kwargs):
        finished.append((workflow.pk, state))

    signals.workflow_finished.connect(receiver)
    try:
        workflow = chain()
        # As if a bug or a manual edit left every step terminal without the countdown.
        WorkflowStep.objects.filter(workflow=workflow).update(state="completed")
        assert sweep().workflows_finished == 1
        assert sweep().workflows_finished == 0
    finally:
        signals.workflow_finished.disconnect(receiver)
    workflow.refresh_from_db()
    assert workflow.state == "completed"
    assert finished == [(workflow.pk, "completed")]


def test_prune_deletes_only_old_finished_workflows(clean_jobs):
    pruned = []

    def receiver(sender, count, **kwargs):
        pruned.append(count)

    old = chain()
    running = chain()
    fresh = chain()
    Workflow.objects.filter(pk__in=[old.pk, fresh.pk]).update(
        state="completed", finished_at=timezone.now()
    )
    Workflow.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - datetime.timedelta(days=8)
    )
    signals.workflows_pruned.connect(receiver)
    try:
        assert prune_workflows(datetime.timedelta(days=7), batch_size=1) == 1
    finally:
        signals.workflows_pruned.disconnect(receiver)
    assert set(Workflow.objects.values_list("pk", flat=True)) == {running.pk, fresh.pk}
    assert not WorkflowStep.objects.filter(workflow_id=old.pk).exists()
    assert pruned == [1]


def test_only_one_sweep_runs_at_a_time(clean_jobs):
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [0x626174_6F6E])
        assert sweep().skipped
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [0x626174_6F6E])
    finally:
        other.close()
    assert not sweep().skipped
