"""The graph core: building, validating and the state machine. Knows nothing of Django."""

from baton.graph.builder import WorkflowGraph
from baton.graph.spec import NodeSpec, StepSpec
from baton.graph.states import StepState, WorkflowState

__all__ = ["NodeSpec", "StepSpec", "StepState", "WorkflowGraph", "WorkflowState"]
