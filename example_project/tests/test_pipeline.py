"""The demo workflow (fetch -> parse[...] -> store -> report) run by a real worker.

This is also an example of testing workflows with baton.testing: the worker is a
separate process, so the test uses a transactional database (rows must be committed
for the worker to see them).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from baton.models import StepDependency, StepResult, Workflow, WorkflowStep
from baton.testing import (
    WorkerProcess,
    assert_completed,
    run_workflow,
    step_states,
    wait_for_workflow,
)
from example_project.pipeline.tasks import build_ingest

pytestmark = pytest.mark.django_db(transaction=True)


def step(workflow: Workflow, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def test_demo_workflow_completes_with_a_retry():
    workflow = build_ingest(n=20, parts=4, flaky_part=1)

    workflow = run_workflow(workflow, timeout=60, concurrency=4)

    assert_completed(workflow)
    assert step_states(workflow) == {
        "fetch": "completed",
        "parse[0]": "completed",
        "parse[1]": "completed",
        "parse[2]": "completed",
        "parse[3]": "completed",
        "store": "completed",
        "report": "completed",
    }
    # parse[1] fails on its first attempt on purpose; the second attempt succeeds.
    flaky = step(workflow, "parse[1]")
    assert flaky.attempt == 2
    assert "simulated transient error" in flaky.last_error
    assert all(step(workflow, f"parse[{i}]").attempt == 1 for i in (0, 2, 3))
    # Results flow downstream: every row once, summed by store.
    assert step(workflow, "parse[2]").result_value() == {
        "part": 2,
        "rows": [2, 6, 10, 14, 18],
        "total": 50,
    }
    assert step(workflow, "store").result_value() == {"parts": 4, "rows": 20, "total": 190}
    # report returns None: it completes without storing a result.
    assert not StepResult.objects.filter(step__workflow=workflow, step__name="report").exists()


def test_demo_workflow_graph_shape():
    workflow = build_ingest(n=6, parts=3, flaky_part=None)
    edges = {
        (up, down)
        for up, down in StepDependency.objects.filter(workflow=workflow).values_list(
            "upstream__name", "downstream__name"
        )
    }
    assert edges == {
        ("fetch", "parse[0]"),
        ("fetch", "parse[1]"),
        ("fetch", "parse[2]"),
        ("parse[0]", "store"),
        ("parse[1]", "store"),
        ("parse[2]", "store"),
        ("store", "report"),
    }
    # Only the root is queued at insert; the rest wait for their dependencies.
    assert step_states(workflow) == {
        "fetch": "available",
        "parse[0]": "waiting",
        "parse[1]": "waiting",
        "parse[2]": "waiting",
        "store": "waiting",
        "report": "waiting",
    }


def test_demo_workflow_command_inserts_a_runnable_workflow(capsys):
    call_command("demo_workflow", "--rows", "8", "--parts", "2", "--no-flaky")

    workflow = Workflow.objects.get()
    assert f"Inserted ingest workflow {workflow.pk} (5 steps)" in capsys.readouterr().out
    with WorkerProcess(concurrency=2):
        workflow = wait_for_workflow(workflow, timeout=60)
    assert_completed(workflow)
    assert step(workflow, "store").result_value() == {"parts": 2, "rows": 8, "total": 28}


def test_cancelled_demo_workflow_can_be_retried():
    workflow = build_ingest(n=4, parts=2, flaky_part=None)
    assert workflow.cancel() == 5  # nothing ran yet: every step is cancelled
    assert workflow.state == "cancelled"
    assert set(step_states(workflow).values()) == {"cancelled"}

    assert workflow.retry() == 5
    workflow = run_workflow(workflow, timeout=60)

    assert_completed(workflow)
    assert step(workflow, "store").result_value() == {"parts": 2, "rows": 4, "total": 6}
