"""Helpers shared by tests that move steps in-process, as a worker would, without one."""

from __future__ import annotations

import json
from typing import Any

import baton
from baton.execution import advance
from baton.models import Step, Workflow
from tests.testapp.tasks import Echo


def completed(value: Any = None) -> advance.Completed:
    """The outcome of perform() returning `value` (None: no result)."""
    if value is None:
        return advance.Completed(value_json=None)
    text = json.dumps(value)
    return advance.Completed(value_json=text, size_bytes=len(text.encode()))


def run_step(workflow: Workflow, name: str, outcome: advance.AttemptOutcome | None = None) -> None:
    """Do what a worker does for one attempt of an available step: claim, then finish."""
    step = Step.objects.get(workflow=workflow, name=name)
    assert step.job_id is not None, f"{name} is {step.state}, it has no job"
    claimed = advance.claim(step.id, step.job_id)
    assert claimed is not None, f"{name} is not claimable ({step.state})"
    assert advance.finish(claimed, outcome or completed(name))


def chain(name: str = "chain") -> Workflow:
    """a -> b -> c, inserted (no worker runs it)."""
    workflow: Workflow = (
        baton.new(name)
        .add("a", Echo.new(value=1))
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["b"])
        .insert()
    )
    return workflow
