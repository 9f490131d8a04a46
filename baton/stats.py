"""Usage and cost totals per workflow, step and model (see baton.llm.stats)."""

from baton.llm.stats import cost_by_model, steps_for_workflow, workflow_totals

__all__ = ["cost_by_model", "steps_for_workflow", "workflow_totals"]
