"""Crash points for tests/worker/test_crash.py: SIGKILL this worker at a chosen moment of a step.

A worker started with BATON_TEST_CRASH="<step name>:<point>" in its environment kills
itself (kill -9, no clean-up of any kind) when that step reaches that point on its first
attempt, so that the re-run elsewhere can finish. The points, in a step's life:

- claimed:    the claim committed (the step is executing), perform() not called yet;
- performing: inside perform() (steps that call crash_point(), e.g. tasks.CrashAt);
- returned:   perform() returned, baton has not committed the outcome (CrashAt.on_result);
- grafted:    a grafting step's completion wrote its graft and itself, in a transaction
              not committed yet (steps that graft, e.g. tasks.GraftAt);
- committed:  baton committed the completion, Procrastinate has not marked the job done.

Without the variable (the test process, ordinary workers) nothing is connected.
"""

from __future__ import annotations

import os
import signal
from typing import Any

ENV = "BATON_TEST_CRASH"
POINTS = ("claimed", "performing", "returned", "committed")  # of every step
# Of a grafting step's life (tests/test_graft_crash.py).
GRAFT_POINTS = ("claimed", "performing", "returned", "grafted", "committed")


def armed() -> tuple[str, str] | None:
    """(step name, point) from the environment, or None."""
    value = os.environ.get(ENV, "")
    if not value:
        return None
    step_name, _, point = value.rpartition(":")
    if point not in GRAFT_POINTS or not step_name:
        raise ValueError(f"{ENV}={value!r}: expected '<step name>:<one of {GRAFT_POINTS}>'")
    return step_name, point


def crash_point(step_name: str, attempt: int, point: str) -> None:
    """Die here if this worker is armed for (step_name, point) and it is attempt 1."""
    if attempt == 1 and armed() == (step_name, point):
        os.kill(os.getpid(), signal.SIGKILL)


def _on_transition(sender: Any, step: Any, old_state: str, new_state: str, **kwargs: Any) -> None:
    # step_transitioned is sent after the transaction that made the move committed.
    if new_state == "executing":
        crash_point(step.name, step.attempt, "claimed")
    elif new_state == "completed":
        crash_point(step.name, step.attempt, "committed")


def connect() -> None:
    target = armed()
    if target is None:
        return
    from baton import signals

    signals.step_transitioned.connect(_on_transition, dispatch_uid="baton-test-crash")
    if target[1] == "grafted":
        _crash_inside_the_grafting_transaction()


def _crash_inside_the_grafting_transaction() -> None:
    """Die right after the grafting completion's last statement, before its COMMIT: the
    graft's rows and the step's completion are written and not committed."""
    from baton.execution import graft

    complete = graft.complete

    def complete_then_crash(claimed: Any, outcome: Any, ann: Any) -> bool:
        applied: bool = complete(claimed, outcome, ann)
        crash_point(claimed.step.name, claimed.attempt, "grafted")
        return applied

    graft.complete = complete_then_crash
