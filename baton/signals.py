"""baton's Django signals. All are sent after the transaction that caused them commits."""

from django.dispatch import Signal

#: Sent for every step state change: step (a baton.models.WorkflowStep), old_state, new_state.
step_transitioned = Signal()
#: Sent once per workflow when it reaches completed, failed or cancelled: workflow, state.
workflow_finished = Signal()
#: Sent by the sweep with the steps whose lost jobs it re-enqueued: steps (a list).
steps_rescued = Signal()
#: Sent by the sweep after pruning finished workflows: count.
workflows_pruned = Signal()

__all__ = ["step_transitioned", "steps_rescued", "workflow_finished", "workflows_pruned"]
