"""Graph layout for the live page: layered by longest-path depth, ordered to cross less.

Pure Python, no Django. A node's column (x) is its depth: 0 for a step without
dependencies, else one more than its deepest dependency. Its row (y) is its position in
its column, found by a few barycenter sweeps (each node moves towards the mean row of its
neighbours in the column before, then after), which removes most edge crossings of
workflow-shaped graphs. Ties break on the order the nodes were given in, so the same
graph always gets the same picture.

An edge that skips columns is routed between layers, never through the nodes of the
columns it crosses: its source gets one waypoint (a ``Via``) in each column it passes,
ordered with the nodes like a node, so the drawing has a free slot there for the line.
All the long edges of one source share its waypoints (they leave together and part in
the column before their target), which keeps wide fans cheap.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GraphLayout", "Via", "depths", "layout"]

N = TypeVar("N", bound=Hashable)

# Down-and-up sweeps of barycenter ordering; a few are enough, more rarely help.
DEFAULT_SWEEPS = 4


@dataclass(frozen=True)
class Via(Generic[N]):
    """Where the long edges of `source` cross `column`: a slot in that column."""

    source: N
    column: int


@dataclass(frozen=True)
class GraphLayout(Generic[N]):
    """Where each node goes: positions[node] = (column, row).

    `order` lists each column top to bottom, nodes and waypoints (Via) together; `row`
    counts nodes only. `chains[source]` is the last column its waypoints reach (the
    column before its farthest target), for sources with long edges.
    """

    positions: dict[N, tuple[int, int]]
    columns: int  # number of layers (the longest path, in nodes)
    rows: int  # the widest layer
    column_sizes: tuple[int, ...]  # nodes in each layer, to centre the narrow ones
    order: tuple[tuple[N | Via[N], ...], ...] = ()
    chains: dict[N, int] | None = None

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
    index: dict[object, tuple[int, int]] = {node: (i, 0) for i, node in enumerate(nodes)}

    # The farthest column each source's long edges reach: its waypoints go up to there.
    reach: dict[N, int] = {}
    for up, down in edge_list:
        if depth[down] > depth[up] + 1:
            reach[up] = max(reach.get(up, 0), depth[down] - 1)

    items: list[N | Via[N]] = list(nodes)
    upstream: dict[object, list[object]] = {node: [] for node in nodes}
    downstream: dict[object, list[object]] = {node: [] for node in nodes}
    column_of: dict[object, int] = dict(depth.items())

    def link(up: object, down: object) -> None:
        upstream[down].append(up)
        downstream[up].append(down)

    for source, last in reach.items():
        previous: object = source
        for number in range(depth[source] + 1, last + 1):
            via = Via(source, number)
            items.append(via)
            index[via] = (index[source][0], number)
            upstream[via], downstream[via] = [], []
            column_of[via] = number
            link(previous, via)
            previous = via
    for up, down in edge_list:
        if depth[down] == depth[up] + 1:
            link(up, down)
        else:
            link(Via(up, depth[down] - 1), down)

    columns: list[list[N | Via[N]]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for item in items:  # given order first: deterministic start
        columns[column_of[item]].append(item)

    row: dict[object, int] = {}
    for column in columns:
        for position, item in enumerate(column):
            row[item] = position

    def reorder(column: list[N | Via[N]], neighbours: dict[object, list[object]]) -> None:
        def key(item: object) -> tuple[float, tuple[int, int]]:
            around = neighbours[item]
            if not around:  # no neighbour on that side: stay where it is
                return (float(row[item]), index[item])
            return (sum(row[other] for other in around) / len(around), index[item])

        column.sort(key=key)
        for position, item in enumerate(column):
            row[item] = position

    for _ in range(sweeps):
        for column in columns[1:]:
            reorder(column, upstream)
        for column in reversed(columns[:-1]):
            reorder(column, downstream)

    positions: dict[N, tuple[int, int]] = {}
    sizes = []
    for number, column in enumerate(columns):
        count = 0
        for item in column:
            if not isinstance(item, Via):
                positions[item] = (number, count)
                count += 1
        sizes.append(count)
    positions = {node: positions[node] for node in nodes}
    return GraphLayout(
        positions=positions,
        columns=len(columns),
        rows=max(sizes, default=0),
        column_sizes=tuple(sizes),
        order=tuple(tuple(column) for column in columns),
        chains=reach,
    )
