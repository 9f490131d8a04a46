"""Graph layout for the live page: layered by longest-path depth, ordered to cross less.

Pure Python, no Django. A node's column (x) is its depth: 0 for a step without
dependencies, else one more than its deepest dependency. Its row (y) is its position in
its column, found by a few barycenter sweeps (each node moves towards the mean row of its
neighbours in the column before, then after), which removes most edge crossings of
workflow-shaped graphs. Ties break on the order the nodes were given in, so the same
graph always gets the same picture.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GraphLayout", "depths", "layout"]

N = TypeVar("N", bound=Hashable)

# Down-and-up sweeps of barycenter ordering; a few are enough, more rarely help.
DEFAULT_SWEEPS = 4


@dataclass(frozen=True)
class GraphLayout(Generic[N]):
    """Where each node goes: positions[node] = (column, row)."""

    positions: dict[N, tuple[int, int]]
    columns: int  # number of layers (the longest path, in nodes)
    rows: int  # the widest layer
    column_sizes: tuple[int, ...]  # nodes in each layer, to centre the narrow ones

    def __len__(self) -> int:
        return len(self.positions)


def depths(nodes: Sequence[N], edges: Iterable[tuple[N, N]]) -> dict[N, int]:
    """Longest-path depth of each node; edges are (upstream, downstream).

    Raises ValueError on an edge to an unknown node or on a cycle.
    """
    known = set(nodes)
    downstream: dict[N, list[N]] = {node: [] for node in nodes}
    pending: dict[N, int] = dict.fromkeys(nodes, 0)
    for upstream, down in edges:
        if upstream not in known or down not in known:
            raise ValueError(f"edge {upstream!r} -> {down!r} names an unknown node")
        downstream[upstream].append(down)
        pending[down] += 1
    depth: dict[N, int] = dict.fromkeys(nodes, 0)
    ready = [node for node in nodes if pending[node] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for down in downstream[node]:
            depth[down] = max(depth[down], depth[node] + 1)
            pending[down] -= 1
            if pending[down] == 0:
                ready.append(down)
    if seen != len(pending):
        raise ValueError("the graph has a cycle")
    return depth


def layout(
    nodes: Sequence[N], edges: Iterable[tuple[N, N]], *, sweeps: int = DEFAULT_SWEEPS
) -> GraphLayout[N]:
    """Lay out a DAG: column = longest-path depth, row = order within the column."""
    edge_list = list(dict.fromkeys(edges))  # drop duplicate edges, keep their order
    depth = depths(nodes, edge_list)
    index = {node: i for i, node in enumerate(nodes)}

    columns: list[list[N]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in nodes:  # given order first: deterministic start
        columns[depth[node]].append(node)

    upstream: dict[N, list[N]] = {node: [] for node in nodes}
    downstream: dict[N, list[N]] = {node: [] for node in nodes}
    for up, down in edge_list:
        upstream[down].append(up)
        downstream[up].append(down)

    row: dict[N, int] = {}
    for column in columns:
        for position, node in enumerate(column):
            row[node] = position

    def reorder(column: list[N], neighbours: dict[N, list[N]]) -> None:
        def key(node: N) -> tuple[float, int]:
            around = neighbours[node]
            if not around:  # no neighbour on that side: stay where it is
                return (float(row[node]), index[node])
            return (sum(row[other] for other in around) / len(around), index[node])

        column.sort(key=key)
        for position, node in enumerate(column):
            row[node] = position

    for _ in range(sweeps):
        for column in columns[1:]:
            reorder(column, upstream)
        for column in reversed(columns[:-1]):
            reorder(column, downstream)

    positions = {node: (depth[node], row[node]) for node in nodes}
    return GraphLayout(
        positions=positions,
        columns=len(columns),
        rows=max((len(column) for column in columns), default=0),
        column_sizes=tuple(len(column) for column in columns),
    )
