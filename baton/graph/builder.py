"""Building a workflow graph: new / add / add_many / fan_out, then validate.

Pure Python: the Django side (`baton.execution.builder`) adds insert() on top.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol, Self

from baton.exceptions import InvalidWorkflow
from baton.graph.spec import NodeSpec, StepSpec
from baton.graph.validate import check, expand_deps, text_problem

MODEL_ARG = "workflow_model"
MAX_WORKFLOW_NAME_LENGTH = 200
MAX_UNIQUE_KEY_LENGTH = 255
ON_CONFLICT = ("return", "raise")


class StepClass(Protocol):
    """Anything with new(**args) -> StepSpec, such as a baton.Step subclass."""

    def new(self, **args: Any) -> StepSpec: ...


# As stored (Workflow.budget_usd): 14 digits, 6 of them after the point.
BUDGET_PLACES = 6
BUDGET_LIMIT = Decimal(10) ** (14 - BUDGET_PLACES)


def _as_decimal(value: Any) -> Any:
    """A budget as a Decimal, or the value itself when it is not one (reported by
    problems(), not raised here)."""
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        return value
    try:
        # Through str: Decimal(0.1) would carry the float's binary error.
        return Decimal(str(value))
    except ArithmeticError:
        return value


def _budget_problems(budget: Any) -> list[str]:
    if budget is None:
        return []
    if not isinstance(budget, Decimal) or not budget.is_finite():
        return [f"budget_usd must be a Decimal, an int or a numeric string, got {budget!r}"]
    if budget < 0:
        return [f"budget_usd must not be negative, got {budget}"]
    if budget >= BUDGET_LIMIT:
        return [f"budget_usd must be less than {BUDGET_LIMIT:,}, got {budget}"]
    if budget != budget.quantize(Decimal(1).scaleb(-BUDGET_PLACES)):
        return [
            f"budget_usd has more than {BUDGET_PLACES} decimal places ({budget}); "
            "it would be rounded when stored"
        ]
    return []


def _as_names(deps: Any, owner: str, problems: list[str]) -> tuple[str, ...]:
    """`deps` as a tuple of names; anything else is a problem naming `owner`."""
    # A lone string is one name, not a sequence of one-letter names.
    if isinstance(deps, str):
        return (deps,)
    if isinstance(deps, Mapping) or not isinstance(deps, Iterable):
        problems.append(
            f"{owner}: deps must be a step or group name or a list of them, got {deps!r:.80}"
        )
        return ()
    names = tuple(deps)
    bad = [name for name in names if not isinstance(name, str)]
    if bad:
        problems.append(f"{owner}: deps must be names (strings), got {bad[0]!r:.80}")
        return tuple(name for name in names if isinstance(name, str))
    return names


def _as_workflow_id(value: Any, problems: list[str]) -> uuid.UUID:
    """The workflow's id: a UUID or its text; None draws a new one. 0 or '' are not
    "no id" (they would silently become a fresh UUID): they are problems."""
    if value is None:
        return uuid.uuid4()
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    problems.append(f"workflow_id must be None, a uuid.UUID or a UUID string, got {value!r:.80}")
    return uuid.uuid4()


def _flag_problem(name: str, value: Any, *, optional: bool = False) -> list[str]:
    """Flags are real bools: 'yes' or 1 would be stored as something else or refused."""
    if isinstance(value, bool) or (optional and value is None):
        return []
    allowed = "None, True or False" if optional else "True or False"
    return [f"{name} must be {allowed}, got {value!r:.80}"]


class WorkflowGraph:
    """A workflow under construction: named steps and their dependencies."""

    def __init__(
        self,
        workflow_name: str,
        *,
        workflow_id: uuid.UUID | str | None = None,
        ignore_cancelled: bool = False,
        ignore_discarded: bool = False,
        debug: bool = False,
        budget_usd: Decimal | int | str | None = None,
        unique_key: str | None = None,
        on_conflict: str = "return",
    ) -> None:
        self._problems: list[str] = []
        self.workflow_name = workflow_name
        self.workflow_id = _as_workflow_id(workflow_id, self._problems)
        self.ignore_cancelled = ignore_cancelled
        self.ignore_discarded = ignore_discarded
        self.debug = debug
        for flag in ("ignore_cancelled", "ignore_discarded", "debug"):
            self._problems.extend(_flag_problem(flag, getattr(self, flag)))
        self.budget_usd = _as_decimal(budget_usd)
        #: While a workflow with this key is executing, insert() returns it (on_conflict
        #: "return") or raises baton.WorkflowExists ("raise") instead of inserting.
        self.unique_key = unique_key
        self.on_conflict = on_conflict
        self.nodes: list[NodeSpec] = []

    def __len__(self) -> int:
        return len(self.nodes)

    def add(
        self,
        name: str,
        spec: StepSpec,
        deps: str | Iterable[str] = (),
        ignore_cancelled: bool | None = None,
        ignore_discarded: bool | None = None,
    ) -> Self:
        owner = f"step {name!r:.80}"
        for flag, value in (
            ("ignore_cancelled", ignore_cancelled),
            ("ignore_discarded", ignore_discarded),
        ):
            self._problems.extend(
                f"{owner}: {p}" for p in _flag_problem(flag, value, optional=True)
            )
        self.nodes.append(
            NodeSpec(
                name=name,
                spec=spec,
                deps=_as_names(deps, owner, self._problems),
                ignore_cancelled=ignore_cancelled,
                ignore_discarded=ignore_discarded,
            )
        )
        return self

    def add_many(
        self,
        group: str,
        specs: Sequence[StepSpec] | Mapping[Any, StepSpec],
        deps: str | Iterable[str] = (),
    ) -> Self:
        """Fan out: one step per spec, named ``group[key]``; dependents may name `group`."""
        owner = f"group {group!r:.80}"
        if not isinstance(group, str) or not group.strip():
            self._problems.append(f"group name must be a non-empty string, got {group!r:.80}")
            return self
        if isinstance(specs, str | bytes) or not isinstance(specs, Iterable):
            self._problems.append(
                f"{owner}: specs must be a list or a dict of step specs, got {specs!r:.80}"
            )
            return self
        items = specs.items() if isinstance(specs, Mapping) else enumerate(specs)
        dep_names = _as_names(deps, owner, self._problems)
        if group in dep_names:
            # Members would wait on each other; a one-member group would drop its only
            # edge and run as if the dependency were not there.
            self._problems.append(f"{owner} depends on itself")
        count = 0
        for key, spec in items:
            key_text = str(key)
            self.nodes.append(
                NodeSpec(
                    name=f"{group}[{key_text}]",
                    spec=spec,
                    deps=dep_names,
                    group=group,
                    group_key=key_text,
                )
            )
            count += 1
        if count == 0:
            self._problems.append(f"group {group!r} has no steps")
        return self

    def configure_models(self, models: Mapping[str, str]) -> Self:
        """Put ``"workflow_model"`` into the args of the named steps."""
        by_name = {node.name: index for index, node in enumerate(self.nodes)}
        for name, model in models.items():
            if name not in by_name:
                self._problems.append(f"configure_models names unknown step {name!r}")
                continue
            index = by_name[name]
            node = self.nodes[index]
            args = {**node.spec.args, MODEL_ARG: model}
            self.nodes[index] = replace(node, spec=replace(node.spec, args=args))
        return self

    def fan_out(
        self,
        base: str,
        step: StepClass,
        *,
        models: Sequence[str],
        args: Mapping[str, Any] | None = None,
        deps: str | Iterable[str] = (),
        synthesize_with: StepClass | None = None,
        synthesize_model: str | None = None,
    ) -> Self:
        """One step per model as the group `base`, and optionally a synthesis step."""
        if isinstance(models, str):
            self._problems.append(f"fan_out {base!r}: models must be a list, got {models!r}")
            return self
        if not models:
            self._problems.append(f"fan_out {base!r} needs at least one model")
            return self
        bad = [m for m in models if not isinstance(m, str) or not m.strip()]
        if bad:
            self._problems.append(
                f"fan_out {base!r}: models must be non-empty strings, got {bad[0]!r}"
            )
            return self
        repeated = sorted({m for m in models if list(models).count(m) > 1})
        if repeated:
            # Members are keyed by model: a model listed twice would silently run once.
            self._problems.append(
                f"fan_out {base!r} lists model(s) {', '.join(map(repr, repeated))} more than once"
            )
            return self
        specs = {model: step.new(**{**(args or {}), MODEL_ARG: model}) for model in models}
        self.add_many(base, specs, deps=deps)
        if synthesize_with is not None:
            synth_args: dict[str, Any] = dict(args or {})
            if synthesize_model is not None:
                synth_args[MODEL_ARG] = synthesize_model
            self.add(f"{base}_synthesis", synthesize_with.new(**synth_args), deps=[base])
        return self

    def problems(self, is_registered: Callable[[str], bool] | None = None) -> list[str]:
        return self._checked(is_registered)[0]

    def _checked(
        self, is_registered: Callable[[str], bool] | None
    ) -> tuple[list[str], dict[str, list[str]]]:
        problems = list(self._problems)
        if not isinstance(self.workflow_name, str) or not self.workflow_name.strip():
            problems.append("workflow_name must be a non-empty string")
        elif text_problem(self.workflow_name):
            problems.append(f"workflow_name {text_problem(self.workflow_name)}")
        elif len(self.workflow_name) > MAX_WORKFLOW_NAME_LENGTH:
            problems.append(
                f"workflow_name is {len(self.workflow_name)} characters long; "
                f"at most {MAX_WORKFLOW_NAME_LENGTH} are allowed"
            )
        if not self.nodes:
            problems.append("a workflow needs at least one step")
        problems.extend(_budget_problems(self.budget_usd))
        if self.unique_key is not None and (
            not isinstance(self.unique_key, str)
            or not self.unique_key.strip()
            or len(self.unique_key) > MAX_UNIQUE_KEY_LENGTH
        ):
            problems.append(
                f"unique_key must be None or a non-empty string of at most "
                f"{MAX_UNIQUE_KEY_LENGTH} characters, got {self.unique_key!r:.80}"
            )
        if self.on_conflict not in ON_CONFLICT:
            problems.append(
                f"on_conflict must be one of {', '.join(map(repr, ON_CONFLICT))}, "
                f"got {self.on_conflict!r}"
            )
        graph_problems, edges = check(self.nodes, is_registered)
        return problems + graph_problems, edges

    def validate(self, is_registered: Callable[[str], bool] | None = None) -> None:
        """Raise InvalidWorkflow listing every problem; return None when valid."""
        self.validated_edges(is_registered)

    def validated_edges(
        self, is_registered: Callable[[str], bool] | None = None
    ) -> dict[str, list[str]]:
        """validate(), then each step's upstream step names as edges() gives them
        (worked out once: a 100,000-step graph's expansion costs a quarter second)."""
        problems, edges = self._checked(is_registered)
        if problems:
            raise InvalidWorkflow(problems)
        return edges

    def edges(self) -> dict[str, list[str]]:
        """Each step's upstream step names, groups expanded (call after validate)."""
        return expand_deps(self.nodes)
