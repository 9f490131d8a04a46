"""baton.LLMStep: a Step tuned for model calls.

What differs from a plain Step: its own queue (so model calls get workers and
concurrency of their own), more attempts, full-jitter backoff, a per-attempt timeout, rate
limits that snooze instead of spending an attempt, usage recorded from the result, and
the workflow's budget checked before any call is made.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from baton.execution.outcomes import Discard, Outcome, Snooze
from baton.execution.step import Job, Step
from baton.graph.policy import full_jitter_backoff
from baton.llm.hints import retry_after_hint
from baton.llm.ledger import USAGE_KEY, usages_in

BUDGET_EXCEEDED = "budget exceeded"


class BudgetExceeded(Discard):
    """The workflow's recorded cost reached its budget before this step called a model."""

    def __init__(self, cost_usd: Decimal | None, budget_usd: Decimal) -> None:
        super().__init__(BUDGET_EXCEEDED)
        spent = _plain(cost_usd or Decimal(0))
        #: Set on the workflow (Workflow.reason), once: why it ends failed.
        self.workflow_reason = (
            f"{BUDGET_EXCEEDED}: spent ${spent} of a ${_plain(budget_usd)} budget"
        )


def _plain(amount: Decimal) -> str:
    """0.252000000000000 -> '0.252' (the database pads to its scale), never '2.52E-1'."""
    return f"{amount.normalize():f}"


class LLMStep(Step):
    """Subclass and implement perform(job), which calls a model.

    Return a dict with an ``"llm_usage"`` key (a ``baton.llm.Usage``, such as
    ``baton.llm.usage_from(response)``, a dict of its fields, or a list of either) and the
    key is stripped from the stored result and recorded in the ledger; or call
    ``job.record_usage(...)`` per call.
    """

    abstract = True
    queue: ClassVar[str] = "llm"
    max_attempts: ClassVar[int] = 5
    timeout: ClassVar[float | None] = 120.0  # seconds per attempt (job.deadline)
    # A sync perform() passes job.time_left() to its SDK, which enforces it: no thread
    # hand-off per call (an async perform() is cancelled at the timeout).
    enforce_sync_timeout: ClassVar[bool] = False
    retry_backoff: ClassVar[float] = 2.0  # the ceiling of the first retry's delay
    retry_backoff_max: ClassVar[float] = 120.0

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(retry_backoff_max, retry_backoff * 2**(attempt-1))]."""
        return full_jitter_backoff(attempt, base=self.retry_backoff, cap=self.retry_backoff_max)

    def before_perform(self, job: Job) -> Discard | None:
        # The claim read the workflow's running cost: no query of its own.
        workflow = job._claim.workflow
        if workflow.budget_usd is not None and workflow.budget_exceeded:
            return BudgetExceeded(workflow.cost_usd, workflow.budget_usd)
        return None

    def on_result(self, job: Job, value: Any) -> Any:
        if isinstance(value, Exception) and not isinstance(value, Outcome):
            # A returned RateLimited (or SDK error) is treated as if raised.
            return self.on_exception(job, value)
        if isinstance(value, dict) and USAGE_KEY in value:
            value = dict(value)
            usages = usages_in(value.pop(USAGE_KEY))
            for index, usage in enumerate(usages):
                # Keyed, so that a result recorded twice in an attempt counts once.
                job.record(usage, call_key=f"result-{index}" if index else "result")
        return value

    def on_exception(self, job: Job, exc: Exception) -> Any:
        if isinstance(exc, Outcome):  # Snooze, Discard, Error raised on purpose
            return exc
        seconds = retry_after_hint(exc)
        if seconds is not None:
            return Snooze(seconds)
        return exc
