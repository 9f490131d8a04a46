"""Property-based tests of graph validation over random DAGs (no database, no Django)."""

from __future__ import annotations

import itertools
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baton.exceptions import InvalidWorkflow
from baton.graph.builder import WorkflowGraph
from baton.graph.policy import backoff_seconds
from baton.graph.spec import StepSpec

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,  # write nothing into the repository
    suppress_health_check=[HealthCheck.too_slow],
)

# Names without spaces or "->", so that a cycle message splits back into names.
# Text PostgreSQL stores: no NUL, no unpaired surrogates (those are refused by validate,
# see test_unstorable_text_is_refused).
STORABLE = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
NAME = st.text(alphabet=string.ascii_letters + string.digits + "_.:", min_size=1, max_size=12)

Dag = tuple[list[str], list[list[str]]]


@st.composite
def dags(draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 60) -> Dag:
    """Unique names and, for node i, deps drawn only from nodes 0..i-1 (so acyclic)."""
    names = draw(st.lists(NAME, min_size=min_nodes, max_size=max_nodes, unique=True))
    deps: list[list[str]] = []
    for i in range(len(names)):
        if i == 0:
            deps.append([])
            continue
        picked = draw(st.lists(st.integers(0, i - 1), max_size=min(i, 5), unique=True))
        deps.append([names[j] for j in picked])
    return names, deps


def build(names: list[str], deps: list[list[str]]) -> WorkflowGraph:
    wf = WorkflowGraph("prop")
    for name, upstream in zip(names, deps, strict=True):
        wf.add(name, StepSpec("tests.echo", {"name": name}), deps=upstream)
    return wf


def ancestors(index: int, names: list[str], deps: list[list[str]]) -> set[str]:
    """Every node that node `index` depends on, directly or not."""
    position = {name: i for i, name in enumerate(names)}
    found: set[str] = set()
    stack = list(deps[index])
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(deps[position[name]])
    return found


def reported_cycle(errors: list[str]) -> list[str]:
    messages = [e for e in errors if e.startswith("dependency cycle: ")]
    assert len(messages) == 1, errors
    return messages[0].removeprefix("dependency cycle: ").split(" -> ")


@SETTINGS
@given(dags())
def test_random_dag_is_valid_and_edges_match(dag: Dag) -> None:
    names, deps = dag
    wf = build(names, deps)
    wf.validate()
    assert wf.problems() == []
    assert wf.edges() == dict(zip(names, deps, strict=True))


@SETTINGS
@given(dags(min_nodes=2), st.data())
def test_back_edge_cycle_is_reported_with_real_edges(dag: Dag, data: st.DataObject) -> None:
    names, deps = dag
    # A node with at least one ancestor; make that ancestor depend on it.
    candidates = [i for i in range(len(names)) if deps[i]]
    assume(candidates)
    lower = data.draw(st.sampled_from(candidates), label="lower")
    upstream = sorted(ancestors(lower, names, deps))
    target = data.draw(st.sampled_from(upstream), label="ancestor")
    target_index = names.index(target)
    deps = [list(d) for d in deps]
    deps[target_index].append(names[lower])

    wf = build(names, deps)
    with pytest.raises(InvalidWorkflow) as info:
        wf.validate()
    errors = info.value.errors
    assert errors == [e for e in errors if e.startswith("dependency cycle: ")], errors

    cycle = reported_cycle(errors)
    assert len(cycle) >= 3  # at least "a -> b -> a"
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle: no name twice
    edges = wf.edges()
    for step, waits_on in itertools.pairwise(cycle):
        assert step in edges, step
        assert waits_on in edges[step], (step, waits_on, cycle)
    # The added edge created the only cycles, so every cycle passes through it.
    assert target in cycle and names[lower] in cycle


@SETTINGS
@given(dags(), st.data())
def test_duplicate_insertion_is_reported_by_name(dag: Dag, data: st.DataObject) -> None:
    names, deps = dag
    duplicate = data.draw(st.sampled_from(names), label="duplicate")
    position = data.draw(st.integers(0, len(names)), label="position")
    wf = WorkflowGraph("prop")
    entries: list[tuple[str, list[str]]] = list(zip(names, deps, strict=True))
    entries.insert(position, (duplicate, []))
    for name, upstream in entries:
        wf.add(name, StepSpec("tests.echo", {}), deps=upstream)
    with pytest.raises(InvalidWorkflow) as info:
        wf.validate()
    assert info.value.errors == [f"duplicate step name {duplicate!r}"]


@SETTINGS
@given(dags(), st.data(), NAME)
def test_unknown_dep_is_reported_by_name(dag: Dag, data: st.DataObject, ghost: str) -> None:
    names, deps = dag
    assume(ghost not in names)
    index = data.draw(st.integers(0, len(names) - 1), label="index")
    deps = [list(d) for d in deps]
    deps[index].append(ghost)
    wf = build(names, deps)
    with pytest.raises(InvalidWorkflow) as info:
        wf.validate()
    assert info.value.errors == [f"step {names[index]!r} depends on unknown step {ghost!r}"]
    # The known edges are still reported; the unknown one is left out.
    assert wf.edges()[names[index]] == deps[index][:-1]


@SETTINGS
@given(st.lists(st.text(STORABLE, max_size=8), min_size=1, max_size=10))
def test_group_dependents_see_every_member(keys: list[str]) -> None:
    unique_keys = list(dict.fromkeys(keys))
    wf = WorkflowGraph("prop").add_many("grp", {k: StepSpec("tests.echo", {}) for k in keys})
    wf.add("after", StepSpec("tests.echo", {}), deps="grp")
    wf.validate()
    assert wf.edges()["after"] == [f"grp[{k}]" for k in unique_keys]


def _args_values() -> st.SearchStrategy[Any]:
    json_scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(STORABLE)
        | st.floats(allow_nan=False, allow_infinity=False)
    )
    return st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(STORABLE, max_size=5), children, max_size=4)
        ),
        max_leaves=10,
    )


@SETTINGS
@given(st.dictionaries(st.text(STORABLE, max_size=8), _args_values(), max_size=5))
def test_json_args_always_validate(args: dict[str, Any]) -> None:
    WorkflowGraph("prop").add("a", StepSpec("tests.echo", args)).validate()


@SETTINGS
@given(st.text(STORABLE, max_size=5), st.sampled_from(["\x00", "\ud800", "\udfff"]))
def test_unstorable_text_is_refused(text: str, bad: str) -> None:
    import pytest

    for graph in (
        WorkflowGraph("prop").add("a", StepSpec("tests.echo", {"t": text + bad})),
        WorkflowGraph("prop").add("a", StepSpec("tests.echo", {text + bad: 1})),
        WorkflowGraph("prop").add(text + bad + "a", StepSpec("tests.echo", {})),
        WorkflowGraph("p" + bad).add("a", StepSpec("tests.echo", {})),
    ):
        with pytest.raises(InvalidWorkflow):
            graph.validate()


@SETTINGS
@given(
    st.integers(1, 100_000),
    st.floats(0.01, 10),
    st.floats(1, 10),
    st.floats(0.1, 3600),
    st.floats(0, 1),
)
def test_backoff_within_bounds(
    attempt: int, base: float, factor: float, cap: float, jitter: float
) -> None:
    full = backoff_seconds(attempt, base=base, factor=factor, cap=cap)
    assert 0 < full <= cap
    assert full == min(cap, full)
    delay = backoff_seconds(attempt, base=base, factor=factor, cap=cap, jitter=jitter)
    assert full * (1 - jitter) - 1e-9 <= delay <= full + 1e-9
