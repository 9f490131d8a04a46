"""Under baton's worker a completion ends its own Procrastinate job in the same statement
(advance._COMPLETE_SQL), and the worker skips its finish_job call. The jobs must look
exactly as if Procrastinate had finished them: status, attempts, events, deletion. At the
other end, the worker's fetch claims the step in the fetch's own statement."""

from __future__ import annotations

import time

import pytest
from django.db import connection

import baton
from baton.models import Workflow, WorkflowStep
from baton.testing import assert_completed, wait_for_workflow
from tests.testapp.tasks import Echo, ReturnsError, plain_procrastinate_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def job_state(job_id: int) -> tuple[str, int, bool, list[str]] | None:
    """(status, attempts, abort_requested, event types in order), None when deleted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, attempts, abort_requested FROM procrastinate_jobs WHERE id = %s",
            [job_id],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(
            "SELECT type FROM procrastinate_events WHERE job_id = %s ORDER BY id", [job_id]
        )
        return (row[0], row[1], row[2], [event for (event,) in cursor.fetchall()])


def wait_for_job(job_id: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (state := job_state(job_id)) is not None and state[0] in ("todo", "doing"):
        assert time.monotonic() < deadline, f"job {job_id} still {state[0]}"
        time.sleep(0.05)


def step_jobs(workflow: Workflow) -> dict[str, int]:
    return {
        step.name: step.job_id
        for step in WorkflowStep.objects.filter(workflow=workflow)
        if step.job_id is not None
    }


def test_completed_steps_jobs_end_as_procrastinate_ends_them(start_worker):
    worker = start_worker(concurrency=2)
    plain_job = plain_procrastinate_task.defer()
    workflow = (
        baton.new("finish")
        .add("a", Echo.new(value=1))
        .add_many("fan", [Echo.new() for _ in range(5)], deps=["a"])
        .add("join", Echo.new(), deps=["fan"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    wait_for_job(plain_job)

    # A plain task's job, finished by the worker's own finish_job call, is the model.
    expected = job_state(plain_job)
    assert expected == ("succeeded", 1, False, ["deferred", "started", "succeeded"])
    jobs = step_jobs(workflow)
    assert len(jobs) == 7
    assert {name: job_state(job_id) for name, job_id in jobs.items()} == {
        name: expected for name in jobs
    }
    # Ended in the completion's own transaction: no window where the step is completed
    # and its job still `doing` (a crash there used to leave the job for the sweep).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM baton_step s JOIN procrastinate_events e "
            "ON e.job_id = s.job_id AND e.type = 'succeeded' "
            "WHERE s.workflow_id = %s AND e.at = s.finished_at",
            [workflow.pk],
        )
        assert cursor.fetchone() == (7,)
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log and 'not in "doing"' not in log, log[-3000:]


def test_failed_attempts_are_still_finished_by_the_worker(start_worker):
    start_worker(concurrency=2)
    workflow = baton.new("fails").add("bad", ReturnsError.new()).insert()
    workflow = wait_for_workflow(workflow, timeout=30)
    assert workflow.state == "failed"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
            [ReturnsError.task_name],
        )
        job_ids = [job_id for (job_id,) in cursor.fetchall()]
    assert len(job_ids) == 2  # max_attempts = 2, a fresh job per attempt
    for job_id in job_ids:
        wait_for_job(job_id)  # the worker's finish_job runs after the step's outcome
    assert [job_state(job_id)[:2] for job_id in job_ids] == [("failed", 1), ("failed", 1)]


def test_delete_jobs_successful_deletes_completed_steps_jobs(start_worker):
    start_worker(concurrency=2, extra_args=["--delete-jobs", "successful"])
    plain_job = plain_procrastinate_task.defer()
    ok = baton.new("ok").add("a", Echo.new()).add("b", Echo.new(), deps=["a"]).insert()
    bad = baton.new("bad").add("bad", ReturnsError.new()).insert()
    ok, bad = wait_for_workflow(ok, timeout=30), wait_for_workflow(bad, timeout=30)
    assert_completed(ok)
    wait_for_job(plain_job)
    assert job_state(plain_job) is None  # Procrastinate's own deletion, for comparison
    assert {name: job_state(job_id) for name, job_id in step_jobs(ok).items()} == {
        "a": None,
        "b": None,
    }
    (bad_job,) = step_jobs(bad).values()
    wait_for_job(bad_job)
    assert job_state(bad_job) is not None and job_state(bad_job)[0] == "failed"


def test_the_fetch_claims_the_step_in_its_own_statement(start_worker):
    workflow = (
        baton.new("fetch-claim")
        .add("a", Echo.new())
        .add_many("fan", [Echo.new() for _ in range(4)], deps=["a"])
        .insert()
    )
    # Started after the insert, so that the root's job cannot race the worker's first
    # fetch (see below); under load, one started first sometimes fetched it unclaimed.
    start_worker(concurrency=2)
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    with connection.cursor() as cursor:
        # The job's `started` event (written when the fetch marks it doing) and the
        # step's started_at (the claim) carry the same transaction timestamp.
        # A job committed between the start of the fetch's statement and the moment
        # Procrastinate's fetch function reads the queue can be fetched without its claim
        # (the claim sees the statement's snapshot); its step then claims itself, one
        # statement more. The root's job existed before the worker started: no such race.
        cursor.execute(
            "SELECT s.name FROM baton_step s JOIN procrastinate_events e "
            "ON e.job_id = s.job_id AND e.type = 'started' "
            "WHERE s.workflow_id = %s AND e.at = s.started_at",
            [workflow.pk],
        )
        claimed_by_fetch = {name for (name,) in cursor.fetchall()}
        assert "a" in claimed_by_fetch and len(claimed_by_fetch) >= 3, claimed_by_fetch
    assert all(step.attempt == 1 for step in WorkflowStep.objects.filter(workflow=workflow))
