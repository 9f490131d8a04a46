"""Unit tests of the pure-Python graph core (no database, no Django)."""

from __future__ import annotations

import datetime
import itertools
import math
import random
import uuid
from decimal import Decimal
from typing import Any

import pytest

from baton.exceptions import InvalidWorkflow
from baton.graph.builder import MODEL_ARG, WorkflowGraph
from baton.graph.policy import backoff_seconds, should_retry
from baton.graph.spec import StepSpec
from baton.graph.states import (
    FAILED_STEP_STATES,
    TERMINAL_STEP_STATES,
    StepState,
    can_transition,
)
from baton.graph.validate import find_cycle, json_problem


def spec(**args: Any) -> StepSpec:
    return StepSpec("tests.echo", args)


def errors_of(wf: WorkflowGraph, **kwargs: Any) -> list[str]:
    with pytest.raises(InvalidWorkflow) as info:
        wf.validate(**kwargs)
    return info.value.errors


def cycle_errors(errors: list[str]) -> list[str]:
    return [e for e in errors if e.startswith("dependency cycle: ")]


# --- building ---------------------------------------------------------------------------


def test_linear_workflow_is_valid_and_edges_follow_deps() -> None:
    wf = (
        WorkflowGraph("ingest")
        .add("fetch", spec(url="https://example.com"))
        .add("parse", spec(), deps=["fetch"])
        .add("store", spec(), deps=["parse"])
    )
    wf.validate()  # returns None when valid
    assert wf.problems() == []
    assert len(wf) == 3
    assert wf.edges() == {"fetch": [], "parse": ["fetch"], "store": ["parse"]}


def test_add_returns_the_builder_and_keeps_options() -> None:
    wf = WorkflowGraph("w")
    assert wf.add("a", spec(), ignore_cancelled=True, ignore_discarded=False) is wf
    node = wf.nodes[0]
    assert node.name == "a"
    assert node.deps == ()
    assert node.ignore_cancelled is True
    assert node.ignore_discarded is False
    assert node.group is None


def test_workflow_options() -> None:
    given = uuid.uuid4()
    wf = WorkflowGraph("w", workflow_id=str(given), budget_usd="1.50", debug=True)
    assert wf.workflow_id == given
    assert wf.budget_usd == Decimal("1.50")
    assert wf.debug is True
    assert isinstance(WorkflowGraph("w").workflow_id, uuid.UUID)
    assert WorkflowGraph("w").workflow_id != WorkflowGraph("w").workflow_id


def test_deps_as_a_single_string_is_one_name() -> None:
    wf = WorkflowGraph("w").add("fetch", spec()).add("parse", spec(), deps="fetch")
    assert wf.nodes[1].deps == ("fetch",)
    wf.validate()
    assert wf.edges()["parse"] == ["fetch"]


def test_single_string_dep_of_a_long_name_is_not_split_into_letters() -> None:
    wf = WorkflowGraph("w").add("abc", spec()).add("x", spec(), deps="abc")
    wf.validate()
    assert wf.edges()["x"] == ["abc"]


def test_deps_as_a_tuple_and_a_generator() -> None:
    wf = (
        WorkflowGraph("w")
        .add("a", spec())
        .add("b", spec())
        .add("c", spec(), deps=("a", "b"))
        .add("d", spec(), deps=(n for n in ["a", "c"]))
    )
    wf.validate()
    assert wf.edges()["c"] == ["a", "b"]
    assert wf.edges()["d"] == ["a", "c"]


def test_a_dep_named_twice_is_one_edge() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add("b", spec(), deps=["a", "a"])
    wf.validate()
    assert wf.edges()["b"] == ["a"]


def test_add_many_with_a_list_names_members_by_index() -> None:
    wf = (
        WorkflowGraph("w")
        .add("src", spec())
        .add_many("pages", [spec(p=1), spec(p=2), spec(p=3)], deps="src")
    )
    wf.validate()
    names = [n.name for n in wf.nodes[1:]]
    assert names == ["pages[0]", "pages[1]", "pages[2]"]
    assert [n.group for n in wf.nodes[1:]] == ["pages"] * 3
    assert [n.group_key for n in wf.nodes[1:]] == ["0", "1", "2"]
    assert [dict(n.spec.args) for n in wf.nodes[1:]] == [{"p": 1}, {"p": 2}, {"p": 3}]
    for name in names:
        assert wf.edges()[name] == ["src"]


def test_add_many_with_a_dict_names_members_by_key() -> None:
    wf = WorkflowGraph("w").add_many("m", {"gpt": spec(), "claude": spec(), 7: spec()})
    wf.validate()
    assert [n.name for n in wf.nodes] == ["m[gpt]", "m[claude]", "m[7]"]
    assert [n.group_key for n in wf.nodes] == ["gpt", "claude", "7"]


def test_depending_on_a_group_expands_to_every_member() -> None:
    wf = (
        WorkflowGraph("w")
        .add("start", spec())
        .add_many("chunks", {"a": spec(), "b": spec(), "c": spec()}, deps=["start"])
        .add("merge", spec(), deps=["chunks"])
        .add("after", spec(), deps="merge")
    )
    wf.validate()
    edges = wf.edges()
    assert edges["merge"] == ["chunks[a]", "chunks[b]", "chunks[c]"]
    assert edges["chunks[b]"] == ["start"]
    assert edges["after"] == ["merge"]


def test_depending_on_a_group_and_one_of_its_members_is_no_duplicate_edge() -> None:
    wf = WorkflowGraph("w").add_many("g", [spec(), spec()]).add("x", spec(), deps=["g[0]", "g"])
    wf.validate()
    assert wf.edges()["x"] == ["g[0]", "g[1]"]


def test_a_member_depending_on_a_member_of_another_group() -> None:
    wf = WorkflowGraph("w").add_many("a", [spec(), spec()]).add_many("b", [spec()], deps=["a[1]"])
    wf.validate()
    assert wf.edges()["b[0]"] == ["a[1]"]


def test_empty_group_is_a_problem() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add_many("nothing", [])
    errors = errors_of(wf)
    assert "group 'nothing' has no steps" in errors


def test_empty_group_from_an_empty_dict_is_a_problem() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add_many("nothing", {})
    assert "group 'nothing' has no steps" in errors_of(wf)


# --- validation errors ------------------------------------------------------------------


def test_empty_workflow() -> None:
    errors = errors_of(WorkflowGraph("w"))
    assert errors == ["a workflow needs at least one step"]


def test_workflow_name_must_be_non_empty() -> None:
    errors = errors_of(WorkflowGraph("  ").add("a", spec()))
    assert errors == ["workflow_name must be a non-empty string"]


def test_negative_budget() -> None:
    errors = errors_of(WorkflowGraph("w", budget_usd=-1).add("a", spec()))
    assert len(errors) == 1
    assert "budget_usd must not be negative" in errors[0]


def test_duplicate_step_name() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add("b", spec()).add("a", spec())
    errors = errors_of(wf)
    assert errors == ["duplicate step name 'a'"]


def test_duplicate_member_name_from_keys_that_stringify_alike() -> None:
    wf = WorkflowGraph("w").add_many("g", {1: spec(), "1": spec()})
    assert "duplicate step name 'g[1]'" in errors_of(wf)


def test_step_named_like_a_group_is_a_problem() -> None:
    wf = WorkflowGraph("w").add_many("g", [spec()]).add("g", spec())
    errors = errors_of(wf)
    assert "step name 'g' is also the name of a group" in errors


def test_unknown_dep() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add("b", spec(), deps=["a", "nope"])
    errors = errors_of(wf)
    assert errors == ["step 'b' depends on unknown step 'nope'"]


def test_unknown_dep_of_a_group() -> None:
    wf = WorkflowGraph("w").add_many("g", [spec(), spec()], deps="ghost")
    errors = errors_of(wf)
    assert errors == [
        "step 'g[0]' depends on unknown step 'ghost'",
        "step 'g[1]' depends on unknown step 'ghost'",
    ]


def test_non_string_dep() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add("b", spec(), deps=[3])  # type: ignore[list-item]
    errors = errors_of(wf)
    assert errors == ["step 'b': deps must be names (strings), got 3"]


def test_self_dependency() -> None:
    wf = WorkflowGraph("w").add("a", spec(), deps=["a"])
    errors = errors_of(wf)
    assert errors == ["step 'a' depends on itself"]


def test_self_dependency_among_others() -> None:
    wf = WorkflowGraph("w").add("a", spec()).add("b", spec(), deps=["a", "b"])
    assert errors_of(wf) == ["step 'b' depends on itself"]


def test_two_step_cycle() -> None:
    wf = WorkflowGraph("w").add("a", spec(), deps="b").add("b", spec(), deps="a")
    errors = errors_of(wf)
    assert len(errors) == 1
    assert errors[0] in ("dependency cycle: a -> b -> a", "dependency cycle: b -> a -> b")


def test_cycle_message_names_the_cycle_in_order() -> None:
    # a waits on b, b waits on c, c waits on a.
    wf = (
        WorkflowGraph("w")
        .add("a", spec(), deps="b")
        .add("b", spec(), deps="c")
        .add("c", spec(), deps="a")
    )
    errors = errors_of(wf)
    assert len(errors) == 1
    # Any rotation is fine, but the direction must be "x -> what x waits on".
    assert errors[0] in (
        "dependency cycle: a -> b -> c -> a",
        "dependency cycle: b -> c -> a -> b",
        "dependency cycle: c -> a -> b -> c",
    )


def test_cycle_message_leaves_out_steps_outside_the_cycle() -> None:
    wf = (
        WorkflowGraph("w")
        .add("root", spec())
        .add("a", spec(), deps=["root", "c"])
        .add("b", spec(), deps="a")
        .add("c", spec(), deps="b")
        .add("leaf", spec(), deps="c")
    )
    errors = errors_of(wf)
    [message] = cycle_errors(errors)
    names = message.removeprefix("dependency cycle: ").split(" -> ")
    assert names[0] == names[-1]
    assert set(names) == {"a", "b", "c"}
    edges = wf.edges()
    for step, upstream in itertools.pairwise(names):
        assert upstream in edges[step]


def test_cycle_through_a_group() -> None:
    wf = (
        WorkflowGraph("w")
        .add("start", spec(), deps="end")
        .add_many("g", [spec(), spec()], deps="start")
        .add("end", spec(), deps="g")
    )
    [message] = cycle_errors(errors_of(wf))
    names = message.removeprefix("dependency cycle: ").split(" -> ")
    assert names[0] == names[-1]
    edges = wf.edges()
    for step, upstream in itertools.pairwise(names):
        assert upstream in edges[step]


def test_group_depending_on_itself_is_a_cycle_among_members() -> None:
    wf = WorkflowGraph("w").add_many("g", [spec(), spec()], deps="g")
    errors = errors_of(wf)
    [message] = cycle_errors(errors)
    assert set(message.removeprefix("dependency cycle: ").split(" -> ")) == {"g[0]", "g[1]"}


def test_find_cycle_direction_and_none_for_a_dag() -> None:
    assert find_cycle({"a": ["b"], "b": []}) is None
    cycle = find_cycle({"a": ["b"], "b": ["a"]})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"tags": {"a", "b"}}, "set"),
        ({"when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)}, "datetime"),
        ({"when": datetime.date(2024, 1, 1)}, "date"),
        ({"x": float("nan")}, "float"),
        ({"x": float("inf")}, "float"),
        ({"x": [1, {"y": -math.inf}]}, "float"),
        ({"x": {1: "one"}}, "dict key 1 is not a string"),
        ({"x": [{"ok": {None: 1}}]}, "dict key None is not a string"),
        ({"x": {(1, 2): "pair"}}, "keys must be"),
        ({"x": b"bytes"}, "bytes"),
        ({"x": Decimal("1.5")}, "Decimal"),
        ({"x": object()}, "object"),
    ],
)
def test_non_json_args(args: dict[str, Any], fragment: str) -> None:
    wf = WorkflowGraph("w").add("a", spec(**args))
    errors = errors_of(wf)
    assert len(errors) == 1
    assert errors[0].startswith("step 'a': args are not JSON-serialisable: ")
    assert fragment in errors[0]


def test_non_string_top_level_arg_key() -> None:
    wf = WorkflowGraph("w").add("a", StepSpec("tests.echo", {1: "x"}))  # type: ignore[dict-item]
    [error] = errors_of(wf)
    assert "dict key 1 is not a string" in error


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -3,
        1.5,
        "text",
        [1, "two", None],
        (1, 2),
        {"nested": {"list": [1.0, {"deep": "ok"}]}},
        {"unicode": "héllo ✓"},
    ],
)
def test_json_args_are_accepted(value: Any) -> None:
    assert json_problem({"v": value}) is None
    WorkflowGraph("w").add("a", spec(v=value)).validate()


def test_unregistered_task_name() -> None:
    registered = {"tests.echo"}
    wf = (
        WorkflowGraph("w")
        .add("a", StepSpec("tests.echo", {}))
        .add("b", StepSpec("tests.missing", {}), deps="a")
    )
    errors = errors_of(wf, is_registered=registered.__contains__)
    assert len(errors) == 1
    assert errors[0].startswith("step 'b': task 'tests.missing' is not registered")
    # Without the callable, task names are not checked.
    wf.validate()
    wf.validate(is_registered=lambda name: True)


def test_is_registered_is_asked_about_every_step() -> None:
    asked: list[str] = []

    def is_registered(name: str) -> bool:
        asked.append(name)
        return True

    wf = WorkflowGraph("w").add("a", StepSpec("t.one")).add_many("g", [StepSpec("t.two")])
    wf.validate(is_registered)
    assert asked == ["t.one", "t.two"]


def test_non_spec_step_is_a_problem() -> None:
    wf = WorkflowGraph("w").add("a", "tests.echo")  # type: ignore[arg-type]
    [error] = errors_of(wf)
    assert error == "step 'a': expected a step spec (SomeStep.new(...)), got str"


def test_empty_and_too_long_step_names() -> None:
    wf = WorkflowGraph("w").add("", spec()).add("x" * 201, spec()).add("y" * 200, spec())
    errors = errors_of(wf)
    assert len(errors) == 2
    assert errors[0] == "step name must be a non-empty string, got ''"
    assert "is longer than 200 characters" in errors[1]


def test_invalid_workflow_lists_all_problems_at_once() -> None:
    wf = (
        WorkflowGraph("w")
        .add("a", spec())
        .add("a", spec())  # duplicate
        .add("b", spec(), deps=["ghost"])  # unknown dep
        .add("c", spec(), deps="c")  # self dep
        .add("d", spec(), deps="e")  # cycle d <-> e
        .add("e", spec(), deps="d")
        .add("f", spec(s={1, 2}))  # not JSON
        .add("g", StepSpec("tests.unregistered", {}))  # not registered
        .add_many("empty", [])  # empty group
    )
    with pytest.raises(InvalidWorkflow) as info:
        wf.validate(is_registered=lambda name: name == "tests.echo")
    errors = info.value.errors
    assert isinstance(errors, list)
    assert "duplicate step name 'a'" in errors
    assert "step 'b' depends on unknown step 'ghost'" in errors
    assert "step 'c' depends on itself" in errors
    assert any(e.startswith("step 'f': args are not JSON-serialisable") for e in errors)
    assert any(
        e.startswith("step 'g': task 'tests.unregistered' is not registered") for e in errors
    )
    assert "group 'empty' has no steps" in errors
    [cycle] = cycle_errors(errors)
    assert cycle in ("dependency cycle: d -> e -> d", "dependency cycle: e -> d -> e")
    assert len(errors) == 7
    # The message lists every problem too.
    message = str(info.value)
    assert message.startswith("Invalid workflow (7 problem(s)):")
    for error in errors:
        assert f"  - {error}" in message


def test_problems_does_not_raise_and_validate_is_repeatable() -> None:
    wf = WorkflowGraph("w").add("a", spec(), deps="zzz")
    assert wf.problems() == ["step 'a' depends on unknown step 'zzz'"]
    assert errors_of(wf) == errors_of(wf)


# --- configure_models and fan_out -------------------------------------------------------


class Ask:
    task_name = "tests.ask"

    @classmethod
    def new(cls, **args: Any) -> StepSpec:
        return StepSpec(cls.task_name, args)


class Synthesize:
    task_name = "tests.synthesize"

    @classmethod
    def new(cls, **args: Any) -> StepSpec:
        return StepSpec(cls.task_name, args)


def test_configure_models_puts_the_model_in_args() -> None:
    wf = (
        WorkflowGraph("w")
        .add("a", spec(prompt="hi"))
        .add("b", spec(prompt="yo"), deps="a")
        .configure_models({"a": "gpt-4o"})
    )
    wf.validate()
    assert dict(wf.nodes[0].spec.args) == {"prompt": "hi", MODEL_ARG: "gpt-4o"}
    assert MODEL_ARG == "workflow_model"
    assert dict(wf.nodes[1].spec.args) == {"prompt": "yo"}
    # Everything else about the node is kept.
    assert wf.nodes[1].deps == ("a",)
    assert wf.nodes[0].spec.task_name == "tests.echo"


def test_configure_models_does_not_mutate_the_original_spec() -> None:
    original = spec(prompt="hi")
    wf = WorkflowGraph("w").add("a", original).configure_models({"a": "m"})
    assert dict(original.args) == {"prompt": "hi"}
    assert wf.nodes[0].spec.args[MODEL_ARG] == "m"


def test_configure_models_overrides_a_model_already_in_args() -> None:
    wf = WorkflowGraph("w").add("a", spec(workflow_model="old")).configure_models({"a": "new"})
    assert wf.nodes[0].spec.args[MODEL_ARG] == "new"


def test_configure_models_of_an_unknown_step() -> None:
    wf = WorkflowGraph("w").add("a", spec()).configure_models({"b": "m"})
    assert errors_of(wf) == ["configure_models names unknown step 'b'"]


def test_fan_out_without_synthesis() -> None:
    wf = (
        WorkflowGraph("w")
        .add("prep", spec())
        .fan_out("ask", Ask, models=["gpt", "claude"], args={"q": "why?"}, deps="prep")
    )
    wf.validate()
    assert [n.name for n in wf.nodes] == ["prep", "ask[gpt]", "ask[claude]"]
    for node, model in zip(wf.nodes[1:], ["gpt", "claude"], strict=True):
        assert node.group == "ask"
        assert node.group_key == model
        assert node.spec.task_name == "tests.ask"
        assert dict(node.spec.args) == {"q": "why?", MODEL_ARG: model}
    assert wf.edges()["ask[gpt]"] == ["prep"]


def test_fan_out_with_synthesis() -> None:
    wf = WorkflowGraph("w").fan_out(
        "ask",
        Ask,
        models=["gpt", "claude"],
        args={"q": "why?"},
        synthesize_with=Synthesize,
        synthesize_model="judge",
    )
    wf.validate()
    assert [n.name for n in wf.nodes] == ["ask[gpt]", "ask[claude]", "ask_synthesis"]
    synth = wf.nodes[-1]
    assert synth.spec.task_name == "tests.synthesize"
    assert dict(synth.spec.args) == {"q": "why?", MODEL_ARG: "judge"}
    assert wf.edges()["ask_synthesis"] == ["ask[gpt]", "ask[claude]"]


def test_fan_out_synthesis_without_a_model() -> None:
    wf = WorkflowGraph("w").fan_out("ask", Ask, models=["m"], synthesize_with=Synthesize)
    wf.validate()
    assert dict(wf.nodes[-1].spec.args) == {}
    assert dict(wf.nodes[0].spec.args) == {MODEL_ARG: "m"}


def test_fan_out_without_models_is_a_problem() -> None:
    wf = WorkflowGraph("w").add("a", spec()).fan_out("ask", Ask, models=[])
    assert errors_of(wf) == ["fan_out 'ask' needs at least one model"]


def test_fan_out_args_override_is_per_member() -> None:
    args = {"q": "x"}
    wf = WorkflowGraph("w").fan_out("ask", Ask, models=["a", "b"], args=args)
    assert args == {"q": "x"}  # not mutated
    assert [n.spec.args[MODEL_ARG] for n in wf.nodes] == ["a", "b"]


# --- states -----------------------------------------------------------------------------


def test_completed_is_final() -> None:
    for state in StepState:
        assert not can_transition(StepState.COMPLETED, state)


def test_state_machine_sanity() -> None:
    S = StepState
    assert can_transition(S.WAITING, S.AVAILABLE)
    assert can_transition(S.WAITING, S.CANCELLED)
    assert not can_transition(S.WAITING, S.COMPLETED)
    assert not can_transition(S.WAITING, S.EXECUTING)
    assert can_transition(S.AVAILABLE, S.EXECUTING)
    assert can_transition(S.EXECUTING, S.COMPLETED)
    assert can_transition(S.EXECUTING, S.RETRYABLE)
    assert can_transition(S.RETRYABLE, S.EXECUTING)
    assert not can_transition(S.AVAILABLE, S.COMPLETED)
    # Failed steps come back only through a retry.
    for failed in FAILED_STEP_STATES:
        assert can_transition(failed, S.AVAILABLE)
        assert can_transition(failed, S.WAITING)
        assert not can_transition(failed, S.COMPLETED)
    assert S.COMPLETED in TERMINAL_STEP_STATES
    assert S.EXECUTING not in TERMINAL_STEP_STATES
    assert S("completed") is S.COMPLETED
    assert str(S.COMPLETED) == "completed"


def test_every_state_has_a_transition_entry() -> None:
    for old in StepState:
        for new in StepState:
            assert isinstance(can_transition(old, new), bool)


# --- policy -----------------------------------------------------------------------------


def test_backoff_is_exponential() -> None:
    assert [backoff_seconds(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(3, base=5, factor=3) == 45.0
    assert isinstance(backoff_seconds(1, base=1, factor=2), float)


def test_backoff_is_capped() -> None:
    assert backoff_seconds(9) == 256.0
    assert backoff_seconds(10) == 300.0
    assert backoff_seconds(50) == 300.0
    assert backoff_seconds(4, cap=5) == 5.0


def test_backoff_is_capped_for_huge_attempt_numbers() -> None:
    # base * factor ** (attempt - 1) overflows a float long before attempt 10_000.
    assert backoff_seconds(2_000) == 300.0
    assert backoff_seconds(10_000, factor=10.0, cap=60) == 60.0
    assert backoff_seconds(2_000, base=1.0, factor=2) == 300.0  # int too large for a float
    assert backoff_seconds(2_000, base=1, factor=2) == 300.0


def test_backoff_jitter_stays_within_bounds() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 15):
        full = backoff_seconds(attempt)
        for _ in range(50):
            delay = backoff_seconds(attempt, jitter=0.25, rng=rng)
            assert full * 0.75 <= delay <= full


def test_backoff_jitter_actually_spreads() -> None:
    rng = random.Random(7)
    delays = {backoff_seconds(5, jitter=0.5, rng=rng) for _ in range(20)}
    assert len(delays) > 1


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(3)
    for _ in range(100):
        assert 0.0 <= backoff_seconds(3, jitter=1.0, rng=rng) <= 4.0


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_backoff_attempt_below_one_raises(attempt: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_seconds(attempt)


def test_should_retry() -> None:
    assert should_retry(1, 3)
    assert should_retry(2, 3)
    assert not should_retry(3, 3)
    assert not should_retry(1, 1)


def test_with_options_overrides_class_options_for_one_step() -> None:
    spec = StepSpec("tests.echo", {"x": 1})
    tuned = spec.with_options(queue="slow").with_options(max_attempts=5)
    assert dict(tuned.options) == {"queue": "slow", "max_attempts": 5}
    assert tuned.args == {"x": 1} and tuned.task_name == "tests.echo"
    assert dict(spec.options) == {}


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ("abc", "budget_usd must be a Decimal"),
        (float("nan"), "budget_usd must be a Decimal"),
        (Decimal("Infinity"), "budget_usd must be a Decimal"),
        ([1], "budget_usd must be a Decimal"),
        (True, "budget_usd must be a Decimal"),
        (Decimal("1e8"), "must be less than 100,000,000"),
        ("0.0000004", "more than 6 decimal places"),
    ],
)
def test_bad_budgets_are_named(budget: Any, message: str) -> None:
    errors = errors_of(WorkflowGraph("w", budget_usd=budget).add("a", spec()))
    assert len(errors) == 1 and message in errors[0], errors


def test_budget_from_float_is_taken_as_written() -> None:
    assert WorkflowGraph("w", budget_usd=0.1).budget_usd == Decimal("0.1")
