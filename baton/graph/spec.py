"""What a step is before it is inserted: a task name and JSON arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class StepSpec:
    """One step's task and arguments, as made by ``SomeStep.new(**args)``."""

    task_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    # Per-step overrides of the class options (queue, priority, max_attempts, lock).
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def with_options(self, **options: Any) -> StepSpec:
        """This spec with class options overridden for one step, e.g.
        ``Fetch.new(url=u).with_options(queue="slow", max_attempts=5)``."""
        return StepSpec(self.task_name, self.args, MappingProxyType({**self.options, **options}))


@dataclass(frozen=True)
class NodeSpec:
    """A step as added to a workflow builder."""

    name: str
    spec: StepSpec
    deps: tuple[str, ...]  # step or group names, as written by the user
    group: str | None = None
    group_key: str | None = None
    ignore_cancelled: bool | None = None  # None: the workflow's default
    ignore_discarded: bool | None = None
