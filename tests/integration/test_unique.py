"""Unique workflows: baton.new(..., unique_key=...) against real PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections

import baton
from baton.models import Workflow, WorkflowStep
from tests.helpers import run_step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.django_db(transaction=True)


def onboarding(**options: Any) -> Any:
    return baton.new("onboarding", unique_key="onboarding:user-42", **options).add(
        "welcome", Echo.new()
    )


def test_an_executing_workflow_holds_its_key() -> None:
    first = onboarding().insert()
    second = onboarding().insert()
    assert second.pk == first.pk
    assert Workflow.objects.count() == 1 and WorkflowStep.objects.count() == 1
    with pytest.raises(baton.WorkflowExists) as caught:
        onboarding(on_conflict="raise").insert()
    assert caught.value.workflow_id == first.pk
    assert "onboarding:user-42" in str(caught.value)
    other = baton.new("onboarding", unique_key="onboarding:user-43").add("w", Echo.new())
    assert other.insert().pk != first.pk


def test_a_finished_workflow_gives_its_key_up_and_retry_cannot_take_it_back() -> None:
    first = onboarding().insert()
    run_step(first, "welcome")
    first.refresh_from_db()
    assert first.state == "completed"
    second = onboarding().insert()
    assert second.pk != first.pk and second.state == "executing"

    # A finished workflow made to run again while another holds the key is refused.
    WorkflowStep.objects.filter(workflow=first).update(state="discarded")  # stand-in for a failure
    with pytest.raises(baton.WorkflowExists):
        first.retry()


def test_racing_inserts_never_both_create_one() -> None:
    barrier = threading.Barrier(8)
    results: list[Any] = []
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            barrier.wait()
            results.append(onboarding().insert().pk)
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 8
    assert Workflow.objects.filter(unique_key="onboarding:user-42").count() == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [({"unique_key": ""}, "unique_key must be"), ({"on_conflict": "ignore"}, "on_conflict")],
)
def test_bad_unique_options_are_invalid(options: dict[str, Any], message: str) -> None:
    options.setdefault("unique_key", "k")
    with pytest.raises(baton.InvalidWorkflow, match=message):
        baton.new("w", **options).add("a", Echo.new()).insert()
    assert not Workflow.objects.exists()


def test_reading_an_ancestor_that_is_not_a_dep_says_what_to_add() -> None:
    error = baton.ResultUnavailable("fetch", baton.ResultUnavailable.NOT_A_DEP)
    assert "add it to the step's deps" in str(error) and "'fetch'" in str(error)
