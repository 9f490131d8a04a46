"""PostgreSQL stopped while a step runs: the step's outcome waits for the server to come
back instead of being lost, so perform() runs once (issue: a 15 s outage ran one step's
perform twice, because its completion failed and the sweep then ran it again)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connections

import baton
from baton.models import WorkflowStep
from baton.testing import wait_for_workflow
from tests.testapp.models import PerformRun
from tests.testapp.outage_tasks import ReturnsDuringOutage
from tests.testapp.tasks import Echo

pytestmark = [pytest.mark.worker, pytest.mark.slow]

OUTAGE_SECONDS = 15


def test_a_step_that_returns_during_an_outage_runs_once(start_worker: Any) -> None:
    command = os.environ.get("BATON_TEST_PG_OUTAGE")
    if not command:
        pytest.skip(
            "set BATON_TEST_PG_OUTAGE to a shell command that stops the test database's "
            "PostgreSQL for the number of seconds appended to it, then starts it "
            "(scripts/run-tests.sh does, for its private server)"
        )
    worker = start_worker(
        concurrency=2,
        heartbeat_interval=2,
        env={"BATON_TEST_IMPORT": "tests.testapp.outage_tasks"},
    )
    builder = baton.new("outage")
    builder.add("before", Echo.new(value=1))
    builder.add("during", ReturnsDuringOutage.new(), deps=["before"])
    builder.add("after", Echo.new(value=2), deps=["during"])
    workflow = builder.insert()

    deadline = time.monotonic() + 60
    while not PerformRun.objects.filter(workflow_id=workflow.pk, step="during").exists():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    connections.close_all()
    subprocess.run(f"{command} {shlex.quote(str(OUTAGE_SECONDS))}", shell=True, check=True)
    connections.close_all()

    workflow = wait_for_workflow(workflow, timeout=120)
    runs = Counter(
        PerformRun.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )
    print(f"outage of {OUTAGE_SECONDS}s: perform() runs per step {dict(runs)}")
    states = list(
        WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state", "reason")
    )
    assert workflow.state == "completed", f"{states}\nworker log:\n{worker.log_tail(60)}"
    assert runs == Counter({"before": 1, "during": 1, "after": 1}), runs
    during = WorkflowStep.objects.get(workflow=workflow, name="during")
    assert during.state == "completed" and during.attempt == 1, (during.state, during.attempt)
