"""The workflow page's graph: steps placed by layout.py, big add_many groups and (in big
graphs) steps of one kind collapsed into one node, grafts framed, edges as one SVG path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from baton.display import format_usd
from baton.live.layout import Via, depths, layout
from baton.live.progress import Bar, bucket_counts, group_state, progress_bar
from baton.models import WorkflowStep

# Above this many edges the graph is drawn without them (a note says so): the nodes stay
# readable and the page light.
MAX_DRAWN_EDGES = 25_000
# Above this many edges they are drawn fainter: wide fans otherwise become grey blocks.
DENSE_EDGES = 300
# Node geometry in SVG user units.
NODE_WIDTH = 184
NODE_HEIGHT = 42
COLUMN_PITCH = NODE_WIDTH + 76
ROW_PITCH = NODE_HEIGHT + 14
MARGIN = 16
VIA_PITCH = 8  # the slot a long edge takes in a column it crosses
# add_many groups of more steps than this are drawn as one node (counts and a bar) until
# the user expands them (?expand=<group>, repeatable; ?expand=* for all).
GROUP_THRESHOLD = 12
GROUP_BAR_WIDTH = NODE_WIDTH - 20
# A graph of more nodes than this (after collapsing add_many groups) also folds steps by
# structure, so that it reads at fit: steps of one column whose names share a prefix
# ("fast2bfq_..."), more than GROUP_THRESHOLD of them, become one node; the steps left in
# a column still holding more than FOLD_COLUMN single nodes become one node "column N".
FOLD_ABOVE = 150
FOLD_COLUMN = 2 * GROUP_THRESHOLD
_KIND = re.compile(r"[^_\-.\[\]:/ @#]+")
# Characters of a step name drawn in its node (the full name is its title): what fits a
# node's width in a wide bold font (DejaVu Sans, Debian's default), the worst case.
NAME_CHARS = 20

# What the page reads of each step to draw it.
DRAWN_STEP_FIELDS = (
    "id",
    "name",
    "state",
    "version",
    "attempt",
    "max_attempts",
    "cost_usd",
    "unpriced_calls",
    "group",
    "grafted_by",
)


def short_name(name: str, chars: int = NAME_CHARS) -> str:
    return name if len(name) <= chars else name[: chars - 1] + "…"


def node_title(step: WorkflowStep) -> str:
    """A node's tooltip: its full name, and its cost once it made model calls."""
    if step.cost_usd is None and not step.unpriced_calls:
        return step.name
    return f"{step.name} · cost {format_usd(step.cost_usd, step.unpriced_calls)}"


@dataclass(frozen=True)
class DrawnNode:
    id: int
    name: str
    label: str
    title: str
    state: str
    version: int
    attempt: int
    max_attempts: int
    x: int
    y: int


@dataclass(frozen=True)
class DrawnGroup:
    """An add_many group drawn as one node: its steps' counts per bucket and a bar."""

    name: str
    label: str
    size: int
    state: str
    counts: dict[str, int]
    bar: Bar
    x: int
    y: int
    expand_url: str

    @property
    def rects(self) -> list[tuple[str, str, str]]:
        """The bar's segments in the node: (bucket, x, width) in SVG units."""
        out, x = [], 0.0
        for name, _, percent in self.bar.segments:
            width = GROUP_BAR_WIDTH * percent / 100
            out.append((name, f"{x:.1f}", f"{width:.1f}"))
            x += width
        return out


@dataclass(frozen=True)
class DrawnGraft:
    """A frame around the steps one step grafted (job.graft()), labelled with its name."""

    label: str
    by: int
    x: int
    y: int
    width: int
    height: int


GRAFT_PAD = 6  # around the grafted nodes
GRAFT_LABEL = 14  # above them, for "grafted by X"


@dataclass(frozen=True)
class Drawing:
    nodes: list[DrawnNode]
    groups: list[DrawnGroup]
    folds: dict[str, list[int]]  # folded groups (not add_many's): their steps' ids
    grafts: list[DrawnGraft]
    edge_path: str
    edge_count: int
    edges_drawn: bool
    dense: bool
    width: int
    height: int
    expanded: list[str]  # groups big enough to collapse that the user expanded
    # Where the steps of each expanded group are drawn, (x, y, width, height): the page
    # opened from a group's link starts there (#focus=<group>), not at the first column.
    expanded_boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def _group_key(name: str) -> str:
    return f"group:{name}"


def _collapsible(steps: list[WorkflowStep], expand: set[str]) -> dict[str, list[WorkflowStep]]:
    members: dict[str, list[WorkflowStep]] = {}
    for step in steps:
        if step.group:
            members.setdefault(step.group, []).append(step)
    return {
        name: group
        for name, group in members.items()
        if len(group) > GROUP_THRESHOLD and name not in expand and "*" not in expand
    }


def _kind(name: str) -> str:
    """What a step's name says it is: its first word ("fast2bfq" of
    "fast2bfq_fast2bfq_080603_..._ID0000002", "s3" of "s3_17")."""
    match = _KIND.match(name)
    return match.group(0) if match else name


def _folds(
    steps: list[WorkflowStep],
    key_of: dict[int, Any],
    edges: list[tuple[Any, Any]],
    expand: set[str],
    exempt: set[int],
) -> dict[str, list[WorkflowStep]]:
    """Folded groups of a big graph: name -> its steps (see FOLD_ABOVE). Folding only
    merges steps of one column, so the folded graph has no cycle. Steps in `exempt` (of
    an add_many group the user expanded) and the steps of expanded folds stay drawn."""
    keys = list(dict.fromkeys(key_of[step.id] for step in steps))
    if len(keys) <= FOLD_ABOVE or "*" in expand:
        return {}
    depth = depths(keys, edges)
    singles = [step for step in steps if key_of[step.id] == step.id and step.id not in exempt]
    by_kind: dict[tuple[int, str, int | None], list[WorkflowStep]] = {}
    for step in singles:
        # Grafted steps fold apart from the rest: they are framed by their grafting step.
        grafter = _grafted_by(step)
        by_kind.setdefault((depth[step.id], _kind(step.name), grafter), []).append(step)
    folds: dict[str, list[WorkflowStep]] = {}
    rest: dict[tuple[int, int | None], list[WorkflowStep]] = {}
    for (column, kind, grafter), members in by_kind.items():
        if len(members) > GROUP_THRESHOLD:
            folds[f"{kind}… (column {column + 1}{_graft_suffix(grafter)})"] = members
        else:
            rest.setdefault((column, grafter), []).extend(members)
    for (column, grafter), members in rest.items():
        if len(members) > FOLD_COLUMN:
            folds[f"other steps (column {column + 1}{_graft_suffix(grafter)})"] = members
    return {name: members for name, members in folds.items() if name not in expand}


def _grafted_by(step: Any) -> int | None:
    """The grafting step's id, from the loaded row only (no query for a deferred one)."""
    grafter: int | None = vars(step).get("grafted_by_id")
    return grafter


def _graft_suffix(grafter: int | None) -> str:
    return "" if grafter is None else f", grafted by #{grafter}"


def _graft_frames(
    steps: list[WorkflowStep],
    key_of: dict[int, Any],
    place: dict[Any, tuple[int, int]],
) -> list[DrawnGraft]:
    """One frame per grafting step around what it grafted: its grafted steps' nodes, and
    group nodes whose every step it grafted."""
    names = {step.id: step.name for step in steps}
    members: dict[Any, set[int | None]] = {}
    for step in steps:
        members.setdefault(key_of[step.id], set()).add(_grafted_by(step))
    boxes: dict[int, list[tuple[int, int]]] = {}
    for key, grafters in members.items():
        grafter = next(iter(grafters)) if len(grafters) == 1 else None
        if grafter is not None and key in place:
            boxes.setdefault(grafter, []).append(place[key])
    frames = []
    for grafter, corners in boxes.items():
        # The label goes under the nodes: above them, the first row has no margin for it.
        left = min(x for x, _ in corners) - GRAFT_PAD
        top = min(y for _, y in corners) - GRAFT_PAD
        right = max(x for x, _ in corners) + NODE_WIDTH + GRAFT_PAD
        bottom = max(y for _, y in corners) + NODE_HEIGHT + GRAFT_PAD + GRAFT_LABEL
        label = "grafted by " + short_name(names.get(grafter, f"#{grafter}"))
        frames.append(DrawnGraft(label, grafter, left, top, right - left, bottom - top))
    return frames


def expand_query(expanded: set[str]) -> str:
    return "?" + "&".join(f"expand={quote(name, safe='')}" for name in sorted(expanded))


def draw(
    steps: list[WorkflowStep], edges: list[tuple[int, int]], expand: set[str] | None = None
) -> Drawing:
    """Place each step (layout.py), collapsing big groups, and turn the edges into one
    SVG path that runs between the layers."""
    expand = expand or set()
    collapsed = _collapsible(steps, expand)
    big = set(collapsed) | {name for name in _collapsible(steps, set())}
    key_of: dict[int, Any] = {
        step.id: (_group_key(step.group) if step.group in collapsed else step.id) for step in steps
    }

    def quotient() -> list[tuple[Any, Any]]:
        return list(
            dict.fromkeys(
                (key_of[up], key_of[down]) for up, down in edges if key_of[up] != key_of[down]
            )
        )

    drawn_edges = quotient()
    folds: dict[str, list[WorkflowStep]] = {}
    all_folds: dict[str, list[WorkflowStep]] = {}
    try:
        exempt = {step.id for step in steps if step.group and step.group in expand & big}
        folds = _folds(steps, key_of, drawn_edges, expand, exempt)
        all_folds = _folds(steps, key_of, drawn_edges, set(), exempt)
        big |= set(folds) | set(all_folds)
    except ValueError:  # a cycle through collapsed groups: the fallback below draws it
        pass
    if folds:
        for name, members in folds.items():
            for member in members:
                key_of[member.id] = _group_key(name)
        collapsed = {**collapsed, **folds}
        drawn_edges = quotient()
    keys = list(dict.fromkeys(key_of[step.id] for step in steps))
    try:
        graph = layout(keys, drawn_edges)
    except ValueError:  # collapsing made a cycle (a group member depends on a sibling's
        # dependent): draw every step instead
        collapsed, folds = {}, {}
        key_of = {step.id: step.id for step in steps}
        keys = [step.id for step in steps]
        drawn_edges = list(dict.fromkeys(edges))
        graph = layout(keys, drawn_edges)

    # y of every slot: nodes take a row, waypoints a thin slot; columns are centred.
    heights = []
    for slots in graph.order:
        heights.append(sum(VIA_PITCH if isinstance(i, Via) else ROW_PITCH for i in slots))
    tallest = max(heights, default=ROW_PITCH)
    top: dict[Any, float] = {}
    for number, slots in enumerate(graph.order):
        y = (tallest - heights[number]) / 2
        for item in slots:
            if isinstance(item, Via):
                top[item] = y + VIA_PITCH / 2  # the line's own y
                y += VIA_PITCH
            else:
                top[item] = y
                y += ROW_PITCH

    def x_of(column: int) -> int:
        return MARGIN + column * COLUMN_PITCH

    def y_of(key: Any) -> int:
        return MARGIN + round(top[key])

    nodes = []
    for step in steps:
        key = key_of[step.id]
        if key != step.id:
            continue
        nodes.append(
            DrawnNode(
                id=step.id,
                name=step.name,
                label=short_name(step.name),
                title=node_title(step),
                state=step.state,
                version=step.version,
                attempt=step.attempt,
                max_attempts=step.max_attempts,
                x=x_of(graph.positions[key][0]),
                y=y_of(key),
            )
        )
    groups = []
    for name, members in collapsed.items():
        key = _group_key(name)
        counts = bucket_counts([member.state for member in members])
        groups.append(
            DrawnGroup(
                name=name,
                # A fold's column is where it is drawn: its label keeps the name's word.
                # Room left for the group's size drawn after it.
                label=short_name(
                    name.rsplit(" (column ", 1)[0] if name in folds else name,
                    NAME_CHARS - 2 - len(f"{len(members):,}"),
                ),
                size=len(members),
                state=group_state(counts),
                counts=counts,
                bar=progress_bar(counts),
                x=x_of(graph.positions[key][0]),
                y=y_of(key),
                expand_url=expand_query((expand & big) | {name})
                + "#"
                + urlencode({"focus": name}, quote_via=quote),
            )
        )

    edges_drawn = len(drawn_edges) <= MAX_DRAWN_EDGES
    segments: list[str] = []
    if edges_drawn:
        half = NODE_HEIGHT // 2
        bend = (COLUMN_PITCH - NODE_WIDTH) // 2

        def curve(x1: int, y1: int, x2: int, y2: int) -> str:
            return f"M{x1} {y1}C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}"

        def middle(key: Any) -> int:
            return y_of(key) + half

        # Each source's waypoints once: along its column slots, curving between them.
        for source, last in (graph.chains or {}).items():
            column = graph.positions[source][0]
            x, y = x_of(column) + NODE_WIDTH, middle(source)
            parts = [f"M{x} {y}"]
            for number in range(column + 1, last + 1):
                via = Via(source, number)
                vx, vy = x_of(number), MARGIN + round(top[via])
                parts.append(f"C{x + bend} {y} {vx - bend} {vy} {vx} {vy}H{vx + NODE_WIDTH}")
                x, y = vx + NODE_WIDTH, vy
            segments.append("".join(parts))
        for up, down in drawn_edges:
            up_column, down_column = graph.positions[up][0], graph.positions[down][0]
            if down_column == up_column + 1:
                x1, y1 = x_of(up_column) + NODE_WIDTH, middle(up)
            else:
                x1 = x_of(down_column - 1) + NODE_WIDTH
                y1 = MARGIN + round(top[Via(up, down_column - 1)])
            segments.append(curve(x1, y1, x_of(down_column), middle(down)))
    columns = max(graph.columns, 1)
    place: dict[Any, tuple[int, int]] = {node.id: (node.x, node.y) for node in nodes}
    place.update({_group_key(group.name): (group.x, group.y) for group in groups})
    grafts = _graft_frames(steps, key_of, place)
    expanded_boxes: dict[str, tuple[int, int, int, int]] = {}
    for name in sorted(expand & big):
        members = all_folds.get(name) or [step for step in steps if step.group == name]
        corners = [place[step.id] for step in members if step.id in place]
        if corners:
            left, upper = min(x for x, _ in corners), min(y for _, y in corners)
            right = max(x for x, _ in corners) + NODE_WIDTH
            bottom = max(y for _, y in corners) + NODE_HEIGHT
            expanded_boxes[name] = (left, upper, right - left, bottom - upper)
    height = 2 * MARGIN + max(round(tallest) - (ROW_PITCH - NODE_HEIGHT), NODE_HEIGHT)
    height = max([height, *(frame.y + frame.height + 2 for frame in grafts)])
    return Drawing(
        nodes=nodes,
        groups=groups,
        grafts=grafts,
        folds={name: [member.id for member in members] for name, members in folds.items()},
        edge_path="".join(segments),
        edge_count=len(edges),
        edges_drawn=edges_drawn,
        dense=len(drawn_edges) > DENSE_EDGES,
        width=2 * MARGIN + (columns - 1) * COLUMN_PITCH + NODE_WIDTH,
        height=height,
        expanded=sorted(expand & big),
        expanded_boxes=expanded_boxes,
    )
