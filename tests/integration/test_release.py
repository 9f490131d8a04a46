"""Jobs made by a completion's release look exactly like the jobs insert() writes and
those Procrastinate's defer makes.

Three code paths write Procrastinate jobs: deferrer.defer_jobs (retries, the sweep),
the completion statement (advance._COMPLETE_SQL), and insert() and grafts, which insert
the ready steps' jobs from their rows. Workers and people reading the queue must not be
able to tell them apart.
"""

from __future__ import annotations

import pytest
from django.db import connection

import baton
from baton.execution.deferrer import JobRequest, defer_jobs
from baton.models import WorkflowStep
from tests.helpers import run_step
from tests.testapp.tasks import Configured, Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")


def job_row(job_id: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT queue_name, task_name, priority, lock, queueing_lock, args, status, "
            "scheduled_at FROM procrastinate_jobs WHERE id = %s",
            [job_id],
        )
        columns = [column[0] for column in cursor.description]
        row = dict(zip(columns, cursor.fetchone(), strict=True))
    if isinstance(row["args"], str):
        import json

        row["args"] = json.loads(row["args"])
    return row


def test_released_job_matches_an_inserted_and_a_deferred_one() -> None:
    workflow = (
        baton.new("release")
        .add("root", Configured.new())
        .add("twin", Configured.new())
        .add("next", Configured.new(), deps=["root"])
        .insert()
    )
    run_step(workflow, "root")
    twin, released = (WorkflowStep.objects.get(workflow=workflow, name=n) for n in ("twin", "next"))
    assert released.state == "available" and released.job_id is not None

    (deferred_id,) = defer_jobs(
        [
            JobRequest(
                step_id=twin.id,
                step_name=twin.name,
                workflow_id=str(workflow.pk),
                task_name=twin.task_name,
                queue=twin.queue,
                priority=twin.priority,
                lock=twin.lock,
            )
        ]
    )
    inserted_job, released_job = job_row(twin.job_id), job_row(released.job_id)
    deferred_job = job_row(deferred_id)
    for job, step in ((inserted_job, twin), (deferred_job, twin), (released_job, released)):
        assert job["args"] == {
            "step_id": step.id,
            "workflow_id": str(workflow.pk),
            "step": step.name,
        }
    del inserted_job["args"], deferred_job["args"], released_job["args"]
    # queue, task, priority, lock, status, schedule
    assert released_job == inserted_job == deferred_job


def test_a_dependent_not_yet_ready_gets_no_job() -> None:
    workflow = (
        baton.new("join")
        .add("a", Echo.new())
        .add("b", Echo.new())
        .add("j", Echo.new(), deps=["a", "b"])
        .insert()
    )
    run_step(workflow, "a")
    join = WorkflowStep.objects.get(workflow=workflow, name="j")
    assert join.state == "waiting" and join.job_id is None and join.deps_pending == 1
