"""Transitions collected inside a transaction and announced once it commits.

Use `announcing(alias)`: the announcements it yields are registered when the block
ends, so a move cannot forget to; Django runs them after commit (never after a
rollback), as signals (baton.signals) and local worker wake-ups.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator
from typing import Any

from django.db import transaction

from baton import signals
from baton.execution import local_worker
from baton.graph.states import StepState, can_transition
from baton.models import Workflow, WorkflowStep

logger = logging.getLogger("baton")


class Announcements:
    """Transitions collected inside a transaction, sent as signals once it commits."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.transitions: list[tuple[WorkflowStep, str, dict[str, Any]]] = []
        self.finished_workflows: list[tuple[Any, str]] = []
        self.due: list[datetime.datetime | None] = []

    def step(self, step: WorkflowStep, old_state: str, **extra: Any) -> dict[str, Any]:
        """A transition to announce; `extra` goes to the signal's receivers as keywords
        (the workflow's running cost, when the transition recorded usage)."""
        if not can_transition(StepState(old_state), StepState(step.state)):
            # A bug, not the user's problem: say so loudly, never fail the step for it.
            logger.error(
                "baton: unexpected transition of step %s (%s): %s -> %s",
                step.name,
                step.id,
                old_state,
                step.state,
            )
        self.transitions.append((step, old_state, extra))
        return extra

    def register(self) -> None:
        transaction.on_commit(self._send, using=self.alias)

    def _send(self) -> None:
        for at in self.due:
            local_worker.job_due(at)
        for step, old_state, extra in self.transitions:
            _send_robustly(
                signals.step_transitioned,
                step=step,
                old_state=old_state,
                new_state=step.state,
                **extra,
            )
        if self.finished_workflows:
            workflows = Workflow.objects.using(self.alias).in_bulk(
                [workflow_id for workflow_id, _ in self.finished_workflows]
            )
            for workflow_id, state in self.finished_workflows:
                workflow = workflows.get(workflow_id)
                if workflow is not None:
                    _send_robustly(signals.workflow_finished, workflow=workflow, state=state)


def _send_robustly(signal: Any, **kwargs: Any) -> None:
    # A failing receiver must not fail the step whose transition it observes.
    for receiver, response in signal.send_robust(
        sender=WorkflowStep if "step" in kwargs else Workflow, **kwargs
    ):
        if isinstance(response, Exception):
            logger.error(
                "baton signal receiver %r failed: %r", receiver, response, exc_info=response
            )


@contextlib.contextmanager
def announcing(alias: str) -> Iterator[Announcements]:
    """Announcements for the moves made in the block, sent after their commit."""
    announcements = Announcements(alias)
    yield announcements
    announcements.register()
