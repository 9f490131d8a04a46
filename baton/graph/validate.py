"""Validation of a workflow graph with the standard library's graphlib."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter
from typing import Any

from baton.graph.spec import NodeSpec, StepSpec

MAX_NAME_LENGTH = 200


def expand_deps(nodes: Sequence[NodeSpec]) -> dict[str, list[str]]:
    """Map each step name to the step names it depends on, groups expanded.

    Unknown names are left out; `find_problems` reports them.
    """
    groups: dict[str, list[str]] = {}
    for node in nodes:
        if node.group is not None:
            groups.setdefault(node.group, []).append(node.name)
    names = {node.name for node in nodes}
    group_names = groups.keys()
    expanded: dict[str, list[str]] = {}
    for node in nodes:
        if group_names.isdisjoint(node.deps):  # step names only: the usual case
            expanded[node.name] = [dep for dep in dict.fromkeys(node.deps) if dep in names]
            continue
        upstream: dict[str, None] = {}  # ordered set: a dep named twice is one edge
        for dep in node.deps:
            if dep in names:
                upstream[dep] = None
            for member in groups.get(dep, ()):
                if member != node.name:
                    upstream[member] = None
        expanded[node.name] = list(upstream)
    return expanded


def find_problems(
    nodes: Sequence[NodeSpec],
    is_registered: Callable[[str], bool] | None = None,
) -> list[str]:
    """Every problem of the graph, as human-readable sentences; empty when valid."""
    return check(nodes, is_registered)[0]


def check(
    nodes: Sequence[NodeSpec],
    is_registered: Callable[[str], bool] | None = None,
) -> tuple[list[str], dict[str, list[str]]]:
    """(every problem of the graph, each step's upstream names as `expand_deps` gives
    them): what validation worked out, so that an insert need not expand them again."""
    problems: list[str] = []
    seen: set[str] = set()
    groups = {node.group for node in nodes if node.group is not None}
    for node in nodes:
        if not isinstance(node.name, str) or not node.name.strip():
            problems.append(f"step name must be a non-empty string, got {node.name!r}")
            continue
        if text_problem(node.name):
            problems.append(f"step name {node.name[:40]!r}: {text_problem(node.name)}")
            continue
        if len(node.name) > MAX_NAME_LENGTH:
            problems.append(
                f"step name {node.name[:40]!r}... is longer than {MAX_NAME_LENGTH} characters"
            )
        if node.name in seen:
            problems.append(f"duplicate step name {node.name!r}")
        seen.add(node.name)
        if node.name in groups and node.group != node.name:
            problems.append(f"step name {node.name!r} is also the name of a group")
        if not isinstance(node.spec, StepSpec):
            problems.append(
                f"step {node.name!r}: expected a step spec (SomeStep.new(...)), "
                f"got {type(node.spec).__name__}"
            )
            continue
        if is_registered is not None and not is_registered(node.spec.task_name):
            problems.append(
                f"step {node.name!r}: task {node.spec.task_name!r} is not registered "
                "(is its module imported, e.g. the app's tasks.py?)"
            )
        arg_problem = json_problem(node.spec.args)
        if arg_problem:
            problems.append(f"step {node.name!r}: args are not JSON-serialisable: {arg_problem}")

    known = seen | groups
    for node in nodes:
        for dep in node.deps:
            if not isinstance(dep, str):
                problems.append(f"step {node.name!r}: dependency {dep!r} is not a name")
            elif dep not in known:
                problems.append(f"step {node.name!r} depends on unknown step {dep!r}")
            elif dep == node.name:
                problems.append(f"step {node.name!r} depends on itself")

    expanded = expand_deps(nodes)
    cycle = find_cycle(expanded)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems, expanded


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a list of names whose last equals its first, or None."""
    if _is_acyclic(deps):
        return None
    # Only a graph with a cycle pays for graphlib, which names one.
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name, upstream in deps.items():
        sorter.add(name, *(u for u in upstream if u != name))
    try:
        sorter.prepare()
    except CycleError as exc:
        # graphlib gives the cycle in dependency order (a node, then what it waits on).
        cycle = list(reversed(exc.args[1]))
        return [str(name) for name in cycle]
    return None


def _is_acyclic(deps: Mapping[str, Iterable[str]]) -> bool:
    """Whether the graph has no cycle. Steps are usually added after what they wait on:
    then the order they were added in is a topological order, and the graph is acyclic
    (one comparison per edge). Otherwise Kahn's algorithm: every step can be taken once
    what it waits on was taken. Both a few times quicker than graphlib's prepare(),
    which also walks the graph for a cycle (about a second of a 100,000-step
    workflow's validation)."""
    position = {name: index for index, name in enumerate(deps)}
    if all(
        position.get(up, index) < index or up == name
        for index, (name, upstream) in enumerate(deps.items())
        for up in upstream
    ):
        return True
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for name, upstream in deps.items():
        count = 0
        for up in upstream:
            if up == name:
                continue  # as find_cycle gives graphlib: a step's own name is no edge
            dependents.setdefault(up, []).append(name)
            count += 1
        waiting[name] = waiting.get(name, 0) + count
    for up in dependents:
        waiting.setdefault(up, 0)
    ready = [name for name, count in waiting.items() if count == 0]
    taken = 0
    while ready:
        name = ready.pop()
        taken += 1
        for down in dependents.get(name, ()):
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    return taken == len(waiting)


def text_problem(text: str) -> str | None:
    """Why PostgreSQL would refuse `text` in a text or jsonb column, or None."""
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    if not text.isascii():
        # Strict UTF-8 refuses exactly the surrogate code points (a C loop, not a
        # Python one per character).
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate, which is not UTF-8"
    return None


# json.dumps(value, allow_nan=False) builds an encoder per call: one is enough.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)


def json_problem(value: Any) -> str | None:
    """Why `value` does not survive a JSON round trip unchanged in kind (or would not be
    stored by PostgreSQL's jsonb), or None."""
    if type(value) is dict and not value:
        return None  # no arguments, the usual case of a fan-out's members
    try:
        _STRICT_JSON.encode(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    except RecursionError:
        return "it is nested too deeply"
    return _non_string_keys(value)


def _non_string_keys(value: Any) -> str | None:
    """Non-string dict keys, non-finite floats, and text jsonb refuses (NUL, unpaired
    surrogates), wherever they are in `value`."""
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{value[:20]!r} {problem}" if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"dict key {key!r} is not a string"
            problem = text_problem(key)
            if problem:
                return f"dict key {key[:20]!r} {problem}"
            problem = _non_string_keys(item)
            if problem:
                return problem
    elif isinstance(value, (list, tuple)):
        for item in value:
            problem = _non_string_keys(item)
            if problem:
                return problem
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not valid JSON"
    return None
