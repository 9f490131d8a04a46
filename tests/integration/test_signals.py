"""baton's signals: step_transitioned for every transition, workflow_finished exactly once,
both only after the transaction that caused them commits.

Transitions are driven in-process through baton.execution.advance (claim and finish, as
the task wrapper calls them), so the receivers connected here see every signal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection, connections, transaction

import baton
from baton import signals
from baton.execution import advance
from baton.models import Workflow, WorkflowStep
from tests.helpers import claim, completed
from tests.helpers import step_row as row
from tests.testapp.tasks import Echo, Flaky

pytestmark = pytest.mark.usefixtures("clean_jobs")


class Rollback(Exception):
    pass


@dataclass
class Recorder:
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    finished: list[tuple[Any, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_step(
        self, sender: Any, step: WorkflowStep, old_state: str, new_state: str, **_: Any
    ) -> None:
        assert step.state == new_state
        with self.lock:
            self.transitions.append((step.name, old_state, new_state))

    def on_workflow(self, sender: Any, workflow: Workflow, state: str, **_: Any) -> None:
        assert workflow.state == state
        with self.lock:
            self.finished.append((workflow.pk, state))

    def of(self, name: str) -> list[tuple[str, str]]:
        return [(old, new) for step, old, new in self.transitions if step == name]

    def clear(self) -> None:
        self.transitions.clear()
        self.finished.clear()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    signals.step_transitioned.connect(recorder.on_step)
    signals.workflow_finished.connect(recorder.on_workflow)
    yield recorder
    signals.step_transitioned.disconnect(recorder.on_step)
    signals.workflow_finished.disconnect(recorder.on_workflow)


def job_count(step: WorkflowStep) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE (args->>'step_id')::bigint = %s",
            [step.id],
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_completion_and_release(recorder: Recorder) -> None:
    workflow = (
        baton.new("signals")
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["a", "b"])
        .insert()
    )
    a = claim(workflow, "a")
    assert recorder.of("a") == [("available", "executing")]
    assert advance.finish(a, completed(1))
    assert recorder.of("a") == [("available", "executing"), ("executing", "completed")]
    assert recorder.of("b") == [("waiting", "available")]
    assert recorder.of("c") == []  # still waits for b: no transition, no signal
    assert advance.finish(claim(workflow, "b"), completed())
    assert advance.finish(claim(workflow, "c"), completed())
    assert recorder.of("c") == [
        ("waiting", "available"),
        ("available", "executing"),
        ("executing", "completed"),
    ]
    assert recorder.finished == [(workflow.pk, "completed")]


def test_retry_snooze_discard_and_cascade(recorder: Recorder) -> None:
    workflow = (
        baton.new("signals-failures")
        .add("f", Flaky.new())
        .add("child", Echo.new(), deps=["f"])
        .add("grandchild", Echo.new(), deps=["child"])
        .insert()
    )
    # A failed attempt with attempts left: retryable, with a fresh job.
    first = claim(workflow, "f")
    assert advance.finish(first, advance.Rescheduled(0.0, snooze=False, error="boom"))
    assert row(workflow, "f").state == "retryable"
    # A snooze: scheduled.
    assert advance.finish(claim(workflow, "f"), advance.Rescheduled(0.0, snooze=True))
    assert row(workflow, "f").state == "scheduled"
    # Then given up: discarded, and the dependents are cancelled transitively.
    assert advance.finish(claim(workflow, "f"), advance.Discarded(reason="enough"))
    assert recorder.of("f") == [
        ("available", "executing"),
        ("executing", "retryable"),
        ("retryable", "executing"),
        ("executing", "scheduled"),
        ("scheduled", "executing"),
        ("executing", "discarded"),
    ]
    assert recorder.of("child") == [("waiting", "cancelled")]
    assert recorder.of("grandchild") == [("waiting", "cancelled")]
    assert recorder.finished == [(workflow.pk, "failed")]
    # The superseded first attempt's late outcome changes nothing and announces nothing.
    before = list(recorder.transitions)
    assert not advance.finish(first, completed("late"))
    assert recorder.transitions == before


def test_nothing_is_sent_when_the_transaction_rolls_back(recorder: Recorder) -> None:
    workflow = baton.new("rollback").add("a", Echo.new()).add("b", Echo.new(), deps="a").insert()
    with pytest.raises(Rollback), transaction.atomic():
        a = claim(workflow, "a")
        assert advance.finish(a, completed(1))
        assert recorder.transitions == [] and recorder.finished == []
        raise Rollback
    assert recorder.transitions == [] and recorder.finished == []
    assert row(workflow, "a").state == "available"
    assert row(workflow, "b").state == "waiting"

    # Nested in an outer transaction, the signals wait for the outer commit.
    with transaction.atomic():
        a = claim(workflow, "a")
        assert advance.finish(a, completed(1))
        assert advance.finish(claim(workflow, "b"), completed())
        assert recorder.transitions == [] and recorder.finished == []
    assert [name for name, _, _ in recorder.transitions] == ["a", "a", "b", "b", "b"]
    assert recorder.finished == [(workflow.pk, "completed")]


def test_cancel_and_retry_announce_their_transitions(recorder: Recorder) -> None:
    workflow = (
        baton.new("cancel-retry")
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .add("free", Echo.new())
        .insert()
    )
    assert advance.finish(claim(workflow, "free"), completed("kept"))
    recorder.clear()
    assert workflow.cancel() == 2
    assert sorted(recorder.transitions) == [
        ("a", "available", "cancelled"),
        ("b", "waiting", "cancelled"),
    ]
    assert recorder.finished == [(workflow.pk, "cancelled")]
    assert workflow.cancel() == 0  # already finished: nothing more is sent
    assert recorder.finished == [(workflow.pk, "cancelled")]

    recorder.clear()
    assert workflow.retry() == 2
    # Each retried step leaves cancelled for waiting; a ready one then becomes available.
    assert recorder.of("a") == [("cancelled", "waiting"), ("waiting", "available")]
    assert recorder.of("b") == [("cancelled", "waiting")]
    assert recorder.of("free") == []
    assert recorder.finished == []


def _finish_together(
    claims: list[tuple[advance.Claim, advance.AttemptOutcome]],
) -> list[BaseException]:
    """Finish each claim in its own thread (own database connection), all released at
    once by a barrier."""
    barrier = threading.Barrier(len(claims))
    errors: list[BaseException] = []

    def finish(claimed: advance.Claim, outcome: advance.AttemptOutcome) -> None:
        try:
            barrier.wait(timeout=10)
            assert advance.finish(claimed, outcome)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=finish, args=pair) for pair in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.parametrize("failing", [False, True], ids=["both-complete", "one-discarded"])
def test_workflow_finished_once_when_last_steps_finish_together(
    recorder: Recorder, failing: bool
) -> None:
    """The last two steps finish at the same instant in two threads, 20 times over:
    workflow_finished is sent exactly once per workflow, with the right state."""
    for round_number in range(20):
        recorder.clear()
        workflow = (
            baton.new(f"race-{round_number}").add("x", Echo.new()).add("y", Echo.new()).insert()
        )
        x, y = claim(workflow, "x"), claim(workflow, "y")
        y_outcome: advance.AttemptOutcome = (
            advance.Discarded(reason="lost the race") if failing else completed("y")
        )
        assert _finish_together([(x, completed("x")), (y, y_outcome)]) == []
        workflow.refresh_from_db()
        expected = "failed" if failing else "completed"
        assert workflow.state == expected and workflow.unfinished_steps == 0
        assert workflow.failed_steps == (["y"] if failing else [])
        assert recorder.finished == [(workflow.pk, expected)], f"round {round_number}"


def test_fan_in_released_once_when_last_deps_finish_together(recorder: Recorder) -> None:
    """Two deps of a join finish at the same instant in two threads, 20 times over: the
    join becomes available once, with exactly one Procrastinate job."""
    for round_number in range(20):
        recorder.clear()
        workflow = (
            baton.new(f"join-race-{round_number}")
            .add("x", Echo.new())
            .add("y", Echo.new())
            .add("join", Echo.new(), deps=["x", "y"])
            .insert()
        )
        x, y = claim(workflow, "x"), claim(workflow, "y")
        assert _finish_together([(x, completed("x")), (y, completed("y"))]) == []
        join = row(workflow, "join")
        assert join.state == "available" and join.deps_pending == 0
        assert job_count(join) == 1, f"round {round_number}"
        assert recorder.of("join") == [("waiting", "available")]
        assert recorder.finished == []
