"""Logging of what goes wrong, through the `baton` logger: attach_default_logger()."""

from __future__ import annotations

import logging
from typing import Any

from baton import signals

logger = logging.getLogger("baton")


def _on_step(sender: Any, step: Any, old_state: str, new_state: str, **kwargs: Any) -> None:
    if new_state == "retryable":
        logger.warning(
            "baton: step %s of workflow %s failed attempt %s/%s: %s",
            step.name,
            step.workflow_id,
            step.attempt,
            step.max_attempts,
            step.last_error,
        )
    elif new_state == "discarded":
        logger.error(
            "baton: step %s of workflow %s discarded: %s", step.name, step.workflow_id, step.reason
        )


def _on_workflow(sender: Any, workflow: Any, state: str, **kwargs: Any) -> None:
    log = logger.error if state == "failed" else logger.info
    log(
        "baton: workflow %s (%s) %s%s",
        workflow.name,
        workflow.pk,
        state,
        f"; failed steps: {', '.join(workflow.failed_steps)}" if workflow.failed_steps else "",
    )


def _on_rescued(sender: Any, steps: list[Any], **kwargs: Any) -> None:
    for step in steps:
        logger.warning("baton: rescued step %s of workflow %s", step.name, step.workflow_id)


def attach_default_logger() -> None:
    """Log failures, discards, failed workflows and rescues. Safe to call twice."""
    signals.step_transitioned.connect(_on_step, dispatch_uid="baton.telemetry.step")
    signals.workflow_finished.connect(_on_workflow, dispatch_uid="baton.telemetry.workflow")
    signals.steps_rescued.connect(_on_rescued, dispatch_uid="baton.telemetry.rescued")
