"""The showcase workflows of `make demo` behave as their banner says, on a real worker."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from baton.models import WorkflowStep
from baton.testing import WorkerProcess, step_states, wait_for_workflow
from example_project.pipeline.showcase import build_failure, build_fanout, build_retries

pytestmark = pytest.mark.django_db(transaction=True)


def test_retries_snooze_and_failure_then_retry():
    retries = build_retries(snooze=0.5)
    failure = build_failure(down_for=3600)
    fanout = build_fanout(width=30)
    with WorkerProcess(concurrency=4):
        retries = wait_for_workflow(retries, timeout=60)
        failure = wait_for_workflow(failure, timeout=60)
        fanout = wait_for_workflow(fanout, timeout=60)

        assert retries.state == "completed"
        flaky = WorkflowStep.objects.get(workflow=retries, name="flaky")
        assert (flaky.attempt, flaky.snoozes) == (2, 1)
        assert flaky.result_value() == {"attempts": 2, "snoozes": 1}

        assert failure.state == "failed"
        assert step_states(failure) == {
            "prepare": "completed",
            "call_partner": "discarded",
            "record": "cancelled",
            "notify": "cancelled",
            "audit": "completed",
        }
        assert (
            "partner API down"
            in WorkflowStep.objects.get(workflow=failure, name="call_partner").reason
        )

        # The partner is back: retry runs the discarded step and what it cancelled.
        WorkflowStep.objects.filter(workflow=failure, name="call_partner").update(
            args={"down_for": 0}
        )
        failure.retry()
        failure = wait_for_workflow(failure, timeout=60)
        assert failure.state == "completed"

    assert fanout.state == "completed"
    assert WorkflowStep.objects.get(workflow=fanout, name="join").result_value() == {
        "members": 30,
        "sum": sum(range(30)),
    }


def test_demo_showcase_command_inserts_three_workflows(capsys):
    call_command("demo_showcase", "--width", "5", "--down-for", "1")
    out = capsys.readouterr().out
    assert out.count("Inserted ") == 3
    assert "fanout-5" in out and "showcase-retries" in out and "showcase-failure" in out
