"""baton: dependency-ordered workflows on Procrastinate and PostgreSQL, for Django.

Models are not imported here (that would break app loading): use baton.models.
"""

from typing import TYPE_CHECKING, Any

from baton.exceptions import BatonError, InvalidWorkflow, ResultUnavailable, WorkflowExists
from baton.execution.builder import WorkflowBuilder
from baton.execution.outcomes import Discard, Error, Snooze
from baton.graph.spec import StepSpec

if TYPE_CHECKING:  # the real types for type checkers; loaded lazily at run time
    from baton.execution.step import Job, Step
    from baton.llm.hints import RateLimited
    from baton.llm.multi_model import model_for
    from baton.llm.step import LLMStep
    from baton.results import get_all_results, get_result

__all__ = [
    "BatonError",
    "Discard",
    "Error",
    "InvalidWorkflow",
    "Job",
    "LLMStep",
    "RateLimited",
    "ResultUnavailable",
    "Snooze",
    "Step",
    "StepSpec",
    "WorkflowExists",
    "append",
    "get_all_results",
    "get_result",
    "model_for",
    "new",
]


def new(
    workflow_name: str,
    *,
    workflow_id: Any = None,
    ignore_cancelled: bool = False,
    ignore_discarded: bool = False,
    debug: bool = False,
    budget_usd: Any = None,
    unique_key: str | None = None,
    on_conflict: str = "return",
) -> Any:
    """Start building a workflow: chain .add(...) / .add_many(...), then .insert()."""
    return WorkflowBuilder(
        workflow_name,
        workflow_id=workflow_id,
        ignore_cancelled=ignore_cancelled,
        ignore_discarded=ignore_discarded,
        debug=debug,
        budget_usd=budget_usd,
        unique_key=unique_key,
        on_conflict=on_conflict,
    )


def append(workflow: Any) -> Any:
    """Grow a running workflow: chain .add(...) / .add_many(...), then .insert(). New steps
    may depend on the workflow's existing steps; completed ones count as done."""
    # App loading: append imports the models, and Django imports this package first.
    from baton.execution.append import WorkflowAppender

    return WorkflowAppender(workflow)


def __getattr__(name: str) -> Any:
    # Step, Job and the result helpers import Procrastinate's Django app and Django's ORM;
    # loading them lazily keeps `import baton` cheap and safe before apps are ready.
    if name in ("Step", "Job"):
        from baton.execution import step  # app loading: see above

        return getattr(step, name)
    if name in ("get_result", "get_all_results"):
        from baton import results  # app loading: see above

        return getattr(results, name)
    if name in ("LLMStep", "RateLimited", "model_for"):
        from baton import llm  # app loading: see above

        return getattr(llm, name)
    raise AttributeError(f"module 'baton' has no attribute {name!r}")
