"""baton.explain against real PostgreSQL and real worker processes: why a step waits,
and whether any live worker listens on its queue."""

from __future__ import annotations

from typing import Any

import pytest

import baton
from baton.explain import explain, queue_listeners, stranded_queues
from baton.models import WorkerRegistration
from baton.testing import wait_for_workflow
from tests.helpers import run_step, wait_until
from tests.helpers import step_row as step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")


def test_a_waiting_step_names_its_unfinished_dependencies() -> None:
    workflow = (
        baton.new("why")
        .add("a", Echo.new())
        .add("b", Echo.new())
        .add("c", Echo.new(), deps=["a", "b"])
        .insert()
    )
    run_step(workflow, "a")
    why = explain(step(workflow, "c"))
    assert [(b.name, b.state) for b in why.blockers] == [("b", "available")]
    assert why.sentences == ["waits for 1 of its 2 dependencies: b (available)"]


def test_an_available_step_on_a_queue_nobody_listens_on_says_so() -> None:
    workflow = baton.new("parked").add("p", Echo.new().with_options(queue="parked")).insert()
    why = explain(step(workflow, "p"))
    assert why.sentences[0].startswith("queued on 'parked' for ")
    assert why.sentences[1] == "no worker is listening on queue 'parked'"
    assert why.as_dict()["no_worker"] is True
    assert [(q.queue, q.steps) for q in stranded_queues()] == [("parked", 1)]


@pytest.mark.worker
def test_a_live_worker_registers_its_queues(start_worker: Any) -> None:
    worker = start_worker(concurrency=3, queues=["default", "llm"])
    registration = WorkerRegistration.objects.get()
    assert (registration.queues, registration.concurrency, registration.pid) == (
        ["default", "llm"],
        3,
        worker.pid,
    )
    heard = queue_listeners(["default", "llm", "parked"])
    assert (heard["default"].workers, heard["llm"].workers) == (1, 1)
    assert heard["parked"].none
    assert heard["llm"].sentence() == "1 live worker listens on queue 'llm'"

    workflow = (
        baton.new("mixed")
        .add("runs", Echo.new(value=1))
        .add("parked", Echo.new().with_options(queue="parked"))
        .insert()
    )
    wait_for_workflow_step(workflow, "runs")
    assert [(q.queue, q.steps) for q in stranded_queues()] == [("parked", 1)]
    worker.stop()
    # A stopped worker's heartbeat row is gone: nobody listens any more.
    assert queue_listeners(["default"])["default"].none


def wait_for_workflow_step(workflow: Any, name: str) -> None:
    wait_until(lambda: step(workflow, name).state == "completed", f"{name} to complete")


@pytest.mark.worker
def test_a_worker_for_every_queue_listens_on_any_queue(start_worker: Any) -> None:
    start_worker(concurrency=1)
    assert queue_listeners(["anything"])["anything"].workers == 1
    workflow = baton.new("all").add("a", Echo.new()).insert()
    assert wait_for_workflow(workflow, timeout=30).state == "completed"


def test_the_sweep_warns_of_stranded_queues_and_forgets_gone_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from baton.sweep import sweep

    WorkerRegistration.objects.create(worker_id=999_999, queues=["x"])  # no heartbeat row
    baton.new("stranded").add("p", Echo.new().with_options(queue="parked")).insert()
    with caplog.at_level("WARNING", logger="baton"):
        report = sweep()
    assert report.stranded == ["parked"]
    assert any(
        "1 step(s) are available on queue 'parked', and no worker is listening on it" in m
        for m in caplog.messages
    )
    assert not WorkerRegistration.objects.exists()
