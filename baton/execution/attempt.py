"""What one attempt of a step holds (its Claim) and how it ended (its AttemptOutcome).

These are the engine's records; what perform() itself returns or raises (baton.Error,
Snooze, Discard) is in baton.execution.outcomes and is turned into one of these by the
task wrapper (baton.execution.step.to_outcome).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from baton.llm.ledger import Call
from baton.models import WorkflowStep


# Every outcome carries the model calls its attempt recorded (baton.llm.ledger): they are
# stored by the statement that records the outcome, whatever it is (spent is spent).
@dataclasses.dataclass(frozen=True)
class Completed:
    value_json: str | None  # the result, serialised; None: no result
    size_bytes: int = 0
    calls: tuple[Call, ...] = ()
    # Steps perform() grafted onto the workflow (execution.graft), written with it.
    graft: Any = None


@dataclasses.dataclass(frozen=True)
class Rescheduled:
    """Snoozed (attempt given back) or failed with attempts left (retryable)."""

    delay_seconds: float
    snooze: bool
    error: str = ""
    traceback: str = ""
    calls: tuple[Call, ...] = ()


@dataclasses.dataclass(frozen=True)
class Discarded:
    reason: str
    error: str = ""
    traceback: str = ""
    calls: tuple[Call, ...] = ()
    # Set on the workflow too, when it has none yet: why it will end failed.
    workflow_reason: str = ""


AttemptOutcome = Completed | Rescheduled | Discarded


@dataclasses.dataclass(frozen=True)
class WorkflowAtClaim:
    """What the claim read of the step's workflow, for decisions before perform()
    (the budget, debug capture) that must cost no query of their own."""

    budget_usd: Decimal | None = None
    cost_usd: Decimal | None = None
    debug: bool = False
    trace_parent: str | None = None  # the workflow's trace (baton.tracing)

    @property
    def budget_exceeded(self) -> bool:
        if self.budget_usd is None:
            return False
        return (self.cost_usd or Decimal(0)) >= self.budget_usd


@dataclasses.dataclass
class Claim:
    """A step as claimed by one job's attempt."""

    step: WorkflowStep
    job_id: int
    attempt: int
    workflow: WorkflowAtClaim = dataclasses.field(default_factory=WorkflowAtClaim)
