"""Exactly-once execution under real concurrency: real worker processes, real PostgreSQL.

- a 1,000-wide fan-out into one join, on one worker of concurrency 4 and on two worker
  processes of concurrency 2 (true multi-process races on the join's countdown);
- diamonds, whose two middle steps race to release the last one;
- the runtime gate: a duplicate job for a completed step, and a job that is not the
  step's current job, exit without running perform().
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

import baton
from baton.execution.deferrer import JobRequest, defer_jobs
from baton.models import StepResult, Workflow, WorkflowStep
from baton.testing import WorkerProcess, assert_completed, wait_for_workflow
from tests.helpers import runs_per_step
from tests.helpers import step_row as step
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Collect, Echo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

FAN_WIDTH = 1_000
StartWorker = Callable[..., WorkerProcess]
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled", "aborted")


def jobs_per_step(workflow: Workflow) -> Counter[int]:
    """{step id: number of Procrastinate jobs ever created for it}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (args->>'step_id')::bigint, count(*) FROM procrastinate_jobs "
            "WHERE args->>'workflow_id' = %s GROUP BY 1",
            [str(workflow.pk)],
        )
        return Counter(dict(cursor.fetchall()))


def wait_for_jobs(job_ids: list[int], timeout: float = 30.0) -> dict[int, str]:
    """Poll until the jobs reached a final Procrastinate status; return the statuses."""
    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, status FROM procrastinate_jobs WHERE id = ANY(%s)", [job_ids]
            )
            statuses = dict(cursor.fetchall())
        if all(statuses.get(job_id) in FINAL_JOB_STATES for job_id in job_ids):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout}s: {statuses}")
        time.sleep(0.05)


def request_for(row: WorkflowStep, queue: str | None = None) -> JobRequest:
    return JobRequest(
        step_id=row.id,
        step_name=row.name,
        workflow_id=str(row.workflow_id),
        task_name=row.task_name,
        queue=queue or row.queue,
    )


# ---------------------------------------------------------------------- fan-out / fan-in
def fan_out_fan_in(width: int) -> Any:
    return (
        baton.new(f"fan-{width}")
        .add("root", Echo.new(value="root"))
        .add_many("parts", {f"k{i}": Echo.new(value=i) for i in range(width)}, deps=["root"])
        .add("join", Collect.new(group="parts"), deps=["parts"])
    )


def assert_fan_ran_exactly_once(workflow: Workflow, width: int) -> None:
    assert_completed(workflow)
    names = ["root", *(f"parts[k{i}]" for i in range(width)), "join"]
    steps = dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "id"))
    assert sorted(steps) == sorted(names)

    # Every step's perform() ran exactly once...
    runs = runs_per_step(workflow)
    assert runs == Counter(dict.fromkeys(names, 1)), {n: c for n, c in runs.items() if c != 1}
    # ... from exactly one Procrastinate job each: the join was enqueued once.
    jobs = jobs_per_step(workflow)
    assert jobs[steps["join"]] == 1
    assert jobs == Counter(dict.fromkeys(steps.values(), 1))
    join = step(workflow, "join")
    assert join.attempt == 1 and join.deps_pending == 0
    # The join saw every member's result.
    assert join.result_value() == {"seen": {f"k{i}": i for i in range(width)}}
    # And it started only after the last member finished.
    member_finishes = PerformRun.objects.filter(
        workflow_id=workflow.pk, step__startswith="parts["
    ).values_list("finished", flat=True)
    last_member = max(finished or float("inf") for finished in member_finishes)
    assert PerformRun.objects.get(workflow_id=workflow.pk, step="join").started >= last_member


@pytest.mark.parametrize("run", range(3))
def test_fan_out_fan_in_one_worker_concurrency_4(start_worker: StartWorker, run: int) -> None:
    start_worker(concurrency=4)
    workflow = fan_out_fan_in(FAN_WIDTH).insert()
    workflow = wait_for_workflow(workflow, timeout=180)
    assert_fan_ran_exactly_once(workflow, FAN_WIDTH)


@pytest.mark.parametrize("run", range(3))
def test_fan_out_fan_in_two_worker_processes(start_worker: StartWorker, run: int) -> None:
    first, second = start_worker(concurrency=2), start_worker(concurrency=2)
    workflow = fan_out_fan_in(FAN_WIDTH).insert()
    workflow = wait_for_workflow(workflow, timeout=180)
    assert_fan_ran_exactly_once(workflow, FAN_WIDTH)
    # Both processes took part: the race was between processes, not only threads.
    pids = set(PerformRun.objects.filter(workflow_id=workflow.pk).values_list("pid", flat=True))
    assert pids == {first.pid, second.pid}


# ------------------------------------------------------------------------------ diamond
def test_diamonds_release_their_last_step_once(start_worker: StartWorker) -> None:
    """20 diamonds (a -> b, a -> c, b + c -> d) at once on two worker processes: b and c
    finish close together, on different workers, and d still runs exactly once."""
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    workflows = [
        baton.new(f"diamond-{n}")
        .add("a", Echo.new(value=n))
        .add("b", Echo.new(value="b"), deps=["a"])
        .add("c", Echo.new(value="c"), deps=["a"])
        .add("d", Collect.new(), deps=["b", "c"])
        .insert()
        for n in range(20)
    ]
    for workflow in workflows:
        workflow = wait_for_workflow(workflow, timeout=60)
        assert_completed(workflow)
        assert runs_per_step(workflow) == Counter({"a": 1, "b": 1, "c": 1, "d": 1})
        assert set(jobs_per_step(workflow).values()) == {1}
        assert step(workflow, "d").result_value() == {"seen": {"b": "b", "c": "c"}}
        run_of = {run.step: run for run in PerformRun.objects.filter(workflow_id=workflow.pk)}
        finished = {name: run.finished or float("inf") for name, run in run_of.items()}
        assert finished["a"] <= min(run_of["b"].started, run_of["c"].started)
        assert max(finished["b"], finished["c"]) <= run_of["d"].started


# --------------------------------------------------------------------- the runtime gate
def test_duplicate_job_for_a_completed_step_does_not_run_it(start_worker: StartWorker) -> None:
    start_worker(concurrency=2)
    workflow = (
        baton.new("duplicate")
        .add("a", Echo.new(value="once"))
        .add("b", Echo.new(), deps=["a"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    a, b = step(workflow, "a"), step(workflow, "b")
    result_before = StepResult.objects.get(step=a)
    jobs_before = jobs_per_step(workflow)

    (duplicate,) = defer_jobs([request_for(a)])
    assert duplicate != a.job_id
    assert wait_for_jobs([duplicate]) == {duplicate: "succeeded"}

    assert runs_per_step(workflow) == Counter({"a": 1, "b": 1})
    a_after = step(workflow, "a")
    assert (a_after.state, a_after.attempt, a_after.job_id) == ("completed", 1, a.job_id)
    assert a_after.finished_at == a.finished_at
    assert StepResult.objects.get(step=a).created_at == result_before.created_at
    # Its dependent was not released a second time.
    assert jobs_per_step(workflow)[b.id] == jobs_before[b.id] == 1
    after = Workflow.objects.get(pk=workflow.pk)
    assert after.state == "completed" and after.finished_at == workflow.finished_at


def test_job_that_is_not_the_steps_job_is_rejected(start_worker: StartWorker) -> None:
    workflow = (
        baton.new("stray").add("a", Echo.new(value="a")).add("b", Echo.new(), deps=["a"]).insert()
    )
    a = step(workflow, "a")
    assert a.state == "available" and a.job_id is not None
    # A stray job for `a` on a queue of its own, run by a worker that only sees that
    # queue: the step's own job waits on "default".
    (stray,) = defer_jobs([request_for(a, queue="strays")])
    start_worker(concurrency=1, queues=["strays"])
    assert wait_for_jobs([stray]) == {stray: "succeeded"}
    a_after = step(workflow, "a")
    assert (a_after.state, a_after.attempt, a_after.job_id) == ("available", 0, a.job_id)
    assert runs_per_step(workflow) == Counter()

    # The step's own job then runs it, once.
    start_worker(concurrency=2)
    workflow = wait_for_workflow(workflow, timeout=30)
    assert_completed(workflow)
    assert runs_per_step(workflow) == Counter({"a": 1, "b": 1})
    assert step(workflow, "a").attempt == 1
