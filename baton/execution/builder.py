"""The workflow builder users get from baton.new(): the graph core plus insert()."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async

from baton.execution.registry import is_registered as registered
from baton.graph.builder import WorkflowGraph

if TYPE_CHECKING:
    from baton.models import Workflow


class WorkflowBuilder(WorkflowGraph):
    def validate(self, is_registered: Callable[[str], bool] | None = None) -> None:
        """Raise baton.InvalidWorkflow listing every problem, without inserting."""
        super().validate(is_registered or registered)

    def insert(self) -> Workflow:
        """Validate and write the workflow, its steps, edges and root jobs atomically."""
        # App loading: insert imports the models, and `import baton` loads this module.
        from baton.execution.insert import insert_graph

        return insert_graph(self)

    async def ainsert(self) -> Workflow:
        return await sync_to_async(self.insert)()
