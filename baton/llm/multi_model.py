"""Multi-model workflows: which model a step was configured with.

``configure_models`` and ``fan_out`` live on the workflow builder (baton.graph.builder);
they put the model into the step's args under ``"workflow_model"``.
"""

from __future__ import annotations

from typing import Any

from baton.graph.builder import MODEL_ARG


def model_for(job: Any, default: str) -> str:
    """The model this step was configured with (configure_models / fan_out), else
    `default`."""
    model = job.args.get(MODEL_ARG)
    return model if isinstance(model, str) and model else default
