"""States of steps and workflows, and which transitions are allowed.

The one source of truth for state names: the models build their choices from these.
"""

from __future__ import annotations

from enum import StrEnum


class StepState(StrEnum):
    WAITING = "waiting"  # dependencies not done yet
    AVAILABLE = "available"  # a job is queued and may run now
    SCHEDULED = "scheduled"  # a job is queued for later (snooze or backoff)
    EXECUTING = "executing"  # a worker runs perform()
    RETRYABLE = "retryable"  # the last attempt failed; another is due
    COMPLETED = "completed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"


class WorkflowState(StrEnum):
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STEP_STATES: frozenset[StepState] = frozenset(
    {StepState.COMPLETED, StepState.DISCARDED, StepState.CANCELLED}
)
FAILED_STEP_STATES: frozenset[StepState] = frozenset({StepState.DISCARDED, StepState.CANCELLED})
# States in which a step has (or should have) a Procrastinate job.
QUEUED_STEP_STATES: frozenset[StepState] = frozenset(
    {StepState.AVAILABLE, StepState.SCHEDULED, StepState.RETRYABLE, StepState.EXECUTING}
)
TERMINAL_WORKFLOW_STATES: frozenset[WorkflowState] = frozenset(
    {WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED}
)

_S = StepState
ALLOWED_STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    _S.WAITING: frozenset({_S.AVAILABLE, _S.CANCELLED}),
    # AVAILABLE -> AVAILABLE: the sweep gave the step a new job after its job vanished.
    _S.AVAILABLE: frozenset({_S.AVAILABLE, _S.EXECUTING, _S.CANCELLED, _S.DISCARDED}),
    _S.SCHEDULED: frozenset({_S.EXECUTING, _S.CANCELLED, _S.DISCARDED}),
    _S.RETRYABLE: frozenset({_S.EXECUTING, _S.CANCELLED, _S.DISCARDED}),
    # EXECUTING -> EXECUTING: a re-run of a crashed attempt.
    _S.EXECUTING: frozenset(
        {
            _S.EXECUTING,
            _S.COMPLETED,
            _S.SCHEDULED,
            _S.RETRYABLE,
            _S.DISCARDED,
            _S.CANCELLED,
            _S.AVAILABLE,
        }
    ),
    _S.COMPLETED: frozenset(),
    # Terminal failures come back to life only through workflow.retry().
    _S.DISCARDED: frozenset({_S.AVAILABLE, _S.WAITING}),
    _S.CANCELLED: frozenset({_S.AVAILABLE, _S.WAITING}),
}


def can_transition(old: StepState, new: StepState) -> bool:
    return new in ALLOWED_STEP_TRANSITIONS[old]
