"""The live pages: a list of workflows and a page per workflow drawing its graph.

Both render everything the user needs without JavaScript (states as words and as
``data-state``); live.js then opens a WebSocket (baton/live/consumers.py), applies the
snapshot it receives and every delta after it. Staff, or the ``baton.view_workflow``
permission, may look; anyone else is sent to log in (anonymous) or refused (403).

Also here: the workflow's timeline (a Gantt of queue waits and runs, critical path
marked) and its actions (cancel, retry, retry one step: POST with CSRF, for users with
``baton.change_workflow``, checked here whatever the page showed).
"""

from __future__ import annotations

import datetime
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import global_settings
from django.conf import settings as django_settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from baton.broadcast import decimal_text, step_payload, workflow_payload
from baton.display import format_seconds, format_usd
from baton.exceptions import BatonError
from baton.execution.deferrer import database_alias
from baton.graph.states import TERMINAL_STEP_STATES, StepState, WorkflowState
from baton.listing import CountedPaginator
from baton.live.layout import Via, depths, layout
from baton.models import Step, StepDependency, Workflow

VIEW_PERMISSION = "baton.view_workflow"
CHANGE_PERMISSION = "baton.change_workflow"
WORKFLOWS_PER_PAGE = 50
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
SOCKET_PREFIX = "/ws/baton/workflows/"
EMPTY = "—"

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

# The legend, in the order a step usually moves through them.
STEP_STATES = [state.value for state in StepState]
WORKFLOW_STATES = [state.value for state in WorkflowState]
TERMINAL_STATES = sorted(state.value for state in TERMINAL_STEP_STATES)


# ----------------------------------------------------------------------------- access
def can_view(user: Any) -> bool:
    """Staff, or a user with the baton.view_workflow permission (directly or by group)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_staff or user.has_perm(VIEW_PERMISSION))


def can_change(user: Any) -> bool:
    """Who may cancel and retry from the page: the baton.change_workflow permission
    (superusers have it); staff status alone is not enough."""
    return can_view(user) and bool(user.has_perm(CHANGE_PERMISSION))


def _login_url() -> str:
    # A project that set LOGIN_URL gets its own login page; otherwise the admin's, which
    # any project using baton's pages has (they are for staff).
    if django_settings.LOGIN_URL != global_settings.LOGIN_URL:
        return str(django_settings.LOGIN_URL)
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return str(django_settings.LOGIN_URL)


def _refuse(request: HttpRequest) -> HttpResponse | None:
    """None when the user may look; else the login redirect. Raises 403 for the rest."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), _login_url())
    if not can_view(request.user):
        raise PermissionDenied("You need staff status or the baton.view_workflow permission.")
    return None


# ---------------------------------------------------------------------------- helpers
def workflow_duration(workflow: Workflow, now: datetime.datetime | None = None) -> str:
    end = workflow.finished_at or now or timezone.now()
    return format_seconds(max(0.0, (end - workflow.created_at).total_seconds()))


def workflow_summaries(workflows: Any) -> list[dict[str, Any]]:
    """What the list page shows of each workflow: broadcast's workflow payload and its
    steps counted per progress bucket (one query for them all)."""
    workflows = list(workflows)
    counts = step_counts([workflow.pk for workflow in workflows])
    return [
        {**workflow_payload(workflow), "counts": counts.get(workflow.pk, bucket_counts([]))}
        for workflow in workflows
    ]


def step_counts(workflow_ids: list[Any]) -> dict[Any, dict[str, int]]:
    """{workflow id: {bucket: steps}}, in one grouped query (baton_step_workflow_state)."""
    out: dict[Any, dict[str, int]] = {}
    if not workflow_ids:
        return out
    rows = (
        Step.objects.filter(workflow_id__in=workflow_ids)
        .values_list("workflow_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for workflow_id, state, n in rows:
        counts = out.setdefault(workflow_id, bucket_counts([]))
        counts[bucket(state)] += n
    return out


def step_snapshot(workflow_id: Any) -> list[dict[str, Any]]:
    """Every step's live fields, as the step events carry them."""
    steps = Step.objects.filter(workflow_id=workflow_id).only(
        "id",
        "workflow_id",
        "name",
        "state",
        "version",
        "attempt",
        "max_attempts",
        "started_at",
        "finished_at",
        "reason",
        "cost_usd",
        "unpriced_calls",
        "group",
        "grafted_by",
    )
    payloads = []
    for step in steps:
        payload = step_payload(step)
        del payload["old_state"]
        payloads.append(payload)
    return payloads


def workflow_snapshot(workflow_id: Any) -> dict[str, Any] | None:
    """The first message of a workflow socket: its summary and all step states."""
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None:
        return None
    return {
        "type": "snapshot",
        "workflow": workflow_payload(workflow),
        "steps": step_snapshot(workflow.pk),
    }


def _short(name: str, chars: int = NAME_CHARS) -> str:
    return name if len(name) <= chars else name[: chars - 1] + "…"


def node_title(step: Step) -> str:
    """A node's tooltip: its full name, and its cost once it made model calls."""
    if step.cost_usd is None and not step.unpriced_calls:
        return step.name
    return f"{step.name} · cost {format_usd(step.cost_usd, step.unpriced_calls)}"


# The buckets of progress bars and group nodes, in the order they are drawn.
BUCKETS = ("completed", "failed", "cancelled", "running", "waiting")
_BUCKET_OF = {
    StepState.COMPLETED: "completed",
    StepState.DISCARDED: "failed",
    StepState.CANCELLED: "cancelled",
    StepState.EXECUTING: "running",
}


def bucket(state: str) -> str:
    """Where a step state counts in a progress bar: waiting holds every queued state."""
    return _BUCKET_OF.get(StepState(state), "waiting") if state in STEP_STATES else "waiting"


def bucket_counts(states: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(BUCKETS, 0)
    for state in states:
        counts[bucket(state)] += 1
    return counts


@dataclass(frozen=True)
class Bar:
    """A progress bar: one segment per non-empty bucket, widths in percent."""

    segments: list[tuple[str, int, float]]  # (bucket, count, percent)
    text: str  # "3 completed · 1 failed · 2 waiting"


def progress_bar(counts: dict[str, int]) -> Bar:
    total = sum(counts.values())
    segments = [
        (name, counts[name], 100 * counts[name] / total if total else 0.0)
        for name in BUCKETS
        if counts.get(name)
    ]
    text = " · ".join(f"{count:,} {name}" for name, count, _ in segments) or "no steps"
    return Bar(segments, text)


def group_state(counts: dict[str, int]) -> str:
    """The one state a collapsed group node shows: the most urgent among its steps."""
    if counts["running"]:
        return "executing"
    if counts["failed"]:
        return "discarded"
    if counts["waiting"]:
        return "waiting" if not counts["completed"] else "available"
    if counts["cancelled"]:
        return "cancelled"
    return "completed"


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


def _collapsible(steps: list[Step], expand: set[str]) -> dict[str, list[Step]]:
    members: dict[str, list[Step]] = {}
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
    steps: list[Step],
    key_of: dict[int, Any],
    edges: list[tuple[Any, Any]],
    expand: set[str],
    exempt: set[int],
) -> dict[str, list[Step]]:
    """Folded groups of a big graph: name -> its steps (see FOLD_ABOVE). Folding only
    merges steps of one column, so the folded graph has no cycle. Steps in `exempt` (of
    an add_many group the user expanded) and the steps of expanded folds stay drawn."""
    keys = list(dict.fromkeys(key_of[step.id] for step in steps))
    if len(keys) <= FOLD_ABOVE or "*" in expand:
        return {}
    depth = depths(keys, edges)
    singles = [step for step in steps if key_of[step.id] == step.id and step.id not in exempt]
    by_kind: dict[tuple[int, str, int | None], list[Step]] = {}
    for step in singles:
        # Grafted steps fold apart from the rest: they are framed by their grafting step.
        grafter = _grafted_by(step)
        by_kind.setdefault((depth[step.id], _kind(step.name), grafter), []).append(step)
    folds: dict[str, list[Step]] = {}
    rest: dict[tuple[int, int | None], list[Step]] = {}
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
    steps: list[Step],
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
        label = "grafted by " + _short(names.get(grafter, f"#{grafter}"))
        frames.append(DrawnGraft(label, grafter, left, top, right - left, bottom - top))
    return frames


def _expand_query(expanded: set[str]) -> str:
    return "?" + "&".join(f"expand={quote(name, safe='')}" for name in sorted(expanded))


def draw(
    steps: list[Step], edges: list[tuple[int, int]], expand: set[str] | None = None
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
    folds: dict[str, list[Step]] = {}
    all_folds: dict[str, list[Step]] = {}
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
                label=_short(step.name),
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
                label=_short(
                    name.rsplit(" (column ", 1)[0] if name in folds else name,
                    NAME_CHARS - 2 - len(f"{len(members):,}"),
                ),
                size=len(members),
                state=group_state(counts),
                counts=counts,
                bar=progress_bar(counts),
                x=x_of(graph.positions[key][0]),
                y=y_of(key),
                expand_url=_expand_query((expand & big) | {name})
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


# ------------------------------------------------------------------------------ views
def list_filters(request: HttpRequest) -> tuple[str, str]:
    """The index's filters from the query string: (state, search)."""
    state = request.GET.get("state", "")
    return (state if state in WORKFLOW_STATES else ""), request.GET.get("q", "").strip()[:200]


def filtered_workflows(state: str, search: str) -> Any:
    """Newest first, filtered: by state (index baton_wf_state_created), by a name that
    contains `search`, or by an exact workflow id."""
    workflows = Workflow.objects.order_by("-created_at", "-pk")
    if state:
        workflows = workflows.filter(state=state)
    if search:
        try:
            workflows = workflows.filter(pk=uuid.UUID(search))
        except ValueError:
            workflows = workflows.filter(name__icontains=search)
    return workflows


def state_counts(search: str) -> dict[str, int]:
    """Workflows per state (one grouped query; the search applies, the state filter not)."""
    counts = dict.fromkeys(WORKFLOW_STATES, 0)
    rows = filtered_workflows("", search).order_by().values_list("state").annotate(n=Count("pk"))
    for state, n in rows:
        counts[state] = n
    return counts


def workflow_list(request: HttpRequest) -> HttpResponse:
    refused = _refuse(request)
    if refused is not None:
        return refused
    state, search = list_filters(request)
    counts = state_counts(search)
    total = counts[state] if state else sum(counts.values())
    workflows = filtered_workflows(state, search)
    page = CountedPaginator(workflows, WORKFLOWS_PER_PAGE, total).get_page(request.GET.get("page"))
    now = timezone.now()
    step_buckets = step_counts([workflow.pk for workflow in page.object_list])
    rows = [
        {
            "workflow": workflow,
            "bar": progress_bar(step_buckets.get(workflow.pk, bucket_counts([]))),
            "done": workflow.step_count - workflow.unfinished_steps,
            "percent": round(100 * workflow.progress),
            "duration": workflow_duration(workflow, now),
            "cost": format_usd(workflow.cost_usd, workflow.unpriced_calls),
            "cost_usd": decimal_text(workflow.cost_usd) or "",
        }
        for workflow in page.object_list
    ]
    filtered = bool(state or search)
    config = {
        "kind": "list",
        "socket": f"{SOCKET_PREFIX}?{urlencode({'page': page.number, 'q': search})}",
        "page": page.number,
        "detailUrl": reverse("baton:workflow", args=["00000000-0000-0000-0000-000000000000"]),
        # Filtered pages update the rows they show; only the plain first page adds new ones.
        "filtered": filtered,
    }

    def query(**changes: Any) -> str:
        values = {"state": state, "q": search, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})

    return render(
        request,
        "baton/live/workflow_list.html",
        {
            "page": page,
            "rows": rows,
            "config": config,
            "workflow_states": WORKFLOW_STATES,
            "state": state,
            "search": search,
            "filtered": filtered,
            "state_links": [
                (name, counts[name], query(state=name if name != state else "", page=""))
                for name in WORKFLOW_STATES
            ],
            "all_count": sum(counts.values()),
            "all_url": query(state="", page=""),
            "previous_url": query(page=page.previous_page_number()) if page.has_previous() else "",
            "next_url": query(page=page.next_page_number()) if page.has_next() else "",
        },
    )


def workflow_detail(request: HttpRequest, workflow_id: Any) -> HttpResponse:
    refused = _refuse(request)
    if refused is not None:
        return refused
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    steps = list(Step.objects.filter(workflow=workflow).order_by("id").only(*DRAWN_STEP_FIELDS))
    expand = {name for name in request.GET.getlist("expand") if name}
    edges = list(
        StepDependency.objects.filter(workflow=workflow)
        .order_by("id")
        .values_list("upstream_id", "downstream_id")
    )
    drawing = draw(steps, edges, expand)
    done = sum(1 for step in steps if step.state in TERMINAL_STEP_STATES)
    config = {
        "kind": "workflow",
        "socket": f"{SOCKET_PREFIX}{workflow.pk}/",
        "workflow": workflow_payload(workflow),
        "terminal": TERMINAL_STATES,
        "groups": {group.name: group.size for group in drawing.groups},
        # The steps of each folded group (add_many groups' steps say their group).
        "folds": drawing.folds,
        "expandedBoxes": drawing.expanded_boxes,
        "actionUrl": reverse("baton:workflow-action", args=[workflow.pk]),
        "canChange": can_change(request.user),
    }
    return render(
        request,
        "baton/live/workflow_detail.html",
        {
            "workflow": workflow,
            "drawing": drawing,
            "done": done,
            "total": len(steps),
            "duration": workflow_duration(workflow),
            "cost": format_usd(workflow.cost_usd, workflow.unpriced_calls),
            "cost_usd": decimal_text(workflow.cost_usd) or "",
            "budget": (format_usd(workflow.budget_usd) if workflow.budget_usd is not None else ""),
            "config": config,
            "step_states": STEP_STATES,
            "node_width": NODE_WIDTH,
            "node_height": NODE_HEIGHT,
            "max_drawn_edges": MAX_DRAWN_EDGES,
            "group_threshold": GROUP_THRESHOLD,
            "bar": progress_bar(bucket_counts([step.state for step in steps])),
            "collapse_url": _expand_query(set()) if drawing.expanded else "",
            "can_change": can_change(request.user),
        },
    )


ACTIONS = ("cancel", "retry", "retry-step")


@csrf_protect
@require_POST
def workflow_action(request: HttpRequest, workflow_id: Any) -> HttpResponse:
    """POST cancel / retry / retry-step (with `step`, a step name) for one workflow.

    Answers JSON ``{"ok": bool, "message": str, "workflow": {...}}``; the page then sees
    the transitions over its socket like any other. 403 without baton.change_workflow
    (whatever the page showed), 400 for an unknown action or a step that cannot be
    retried (the engine's message), 404 for an unknown workflow. A form posted without
    JavaScript is sent back to the workflow's page."""
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "message": "Log in first."}, status=403)
    if not can_change(request.user):
        return JsonResponse(
            {"ok": False, "message": "You need the baton.change_workflow permission."},
            status=403,
        )
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    action = request.POST.get("action", "")
    status = 200
    try:
        if action == "cancel":
            cancelled = workflow.cancel()
            message = (
                f"Cancelled the workflow ({cancelled} step{'s' if cancelled != 1 else ''})."
                if workflow.state == WorkflowState.CANCELLED and cancelled
                else f"Nothing to cancel: the workflow is {workflow.state}."
            )
            ok = bool(cancelled)
        elif action == "retry":
            reset = workflow.retry()
            ok = bool(reset)
            message = (
                f"Retrying {reset} step{'s' if reset != 1 else ''}."
                if reset
                else "Nothing to retry: no step is discarded or cancelled."
            )
        elif action == "retry-step":
            name = request.POST.get("step", "")
            reset = workflow.retry(steps=[name])
            ok = True
            others = reset - 1
            message = f"Retrying {name}" + (
                f" and the {others} step{'s' if others != 1 else ''} it cancelled."
                if others
                else "."
            )
        else:
            ok, status = False, 400
            message = f"Unknown action {action!r}: use one of {', '.join(ACTIONS)}."
    except BatonError as error:
        ok, status, message = False, 400, str(error)
    if not ok and status == 200:
        status = 409
    if "application/json" not in request.headers.get("Accept", ""):
        return redirect(reverse("baton:workflow", args=[workflow.pk]))
    workflow.refresh_from_db()
    return JsonResponse(
        {"ok": ok, "message": message, "workflow": workflow_payload(workflow)}, status=status
    )


# ---------------------------------------------------------------------------- timeline
TIMELINE_ROWS = 2_000  # steps drawn in the timeline; the rest are counted in a note


@dataclass(frozen=True)
class Lane:
    """One step in the timeline: its queue wait and its run, in percent of the span."""

    id: int
    name: str
    state: str
    attempt: int
    max_attempts: int
    queued_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    wait_left: float
    wait_width: float
    run_left: float
    run_width: float
    critical: bool
    title: str


def _queued_at(job_ids: list[int]) -> dict[int, datetime.datetime]:
    """When each job was first deferred (Procrastinate's events), in one query."""
    if not job_ids:
        return {}
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT job_id, min(at) FROM procrastinate_events"
            " WHERE job_id = ANY(%s) GROUP BY job_id",
            [job_ids],
        )
        return dict(cursor.fetchall())


def critical_path(steps: list[Step], edges: list[tuple[int, int]]) -> set[int]:
    """The chain that set the workflow's end: from the step that finished last, back
    through the dependency that finished last each time (the one its start waited for)."""
    finished = {s.id: s.finished_at for s in steps if s.finished_at is not None}
    if not finished:
        return set()
    upstream: dict[int, list[int]] = {}
    for up, down in edges:
        upstream.setdefault(down, []).append(up)
    current: int | None = max(finished, key=lambda i: (finished[i], i))
    path: set[int] = set()
    while current is not None and current not in path:
        path.add(current)
        done = [u for u in upstream.get(current, []) if u in finished]
        current = max(done, key=lambda i: (finished[i], i)) if done else None
    return path


def timeline(workflow: Workflow, now: datetime.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    steps = list(
        Step.objects.filter(workflow=workflow)
        .order_by("started_at", "id")
        .only(
            "id",
            "name",
            "state",
            "attempt",
            "max_attempts",
            "job_id",
            "started_at",
            "finished_at",
        )
    )
    edges = list(
        StepDependency.objects.filter(workflow=workflow).values_list("upstream_id", "downstream_id")
    )
    queued = _queued_at([s.job_id for s in steps if s.job_id is not None])
    start = workflow.created_at
    end = max(
        [workflow.finished_at or now] + [s.finished_at for s in steps if s.finished_at is not None]
    )
    span = max((end - start).total_seconds(), 0.001)
    critical = critical_path(steps, edges)

    def pct(moment: datetime.datetime) -> float:
        return round(100 * max(0.0, (moment - start).total_seconds()) / span, 3)

    lanes = []
    for step in steps[:TIMELINE_ROWS]:
        queued_at = queued.get(step.job_id) if step.job_id is not None else None
        run_end = step.finished_at or (now if step.state == StepState.EXECUTING else None)
        wait_left = wait_width = run_left = run_width = 0.0
        if queued_at is not None:
            wait_left = pct(queued_at)
            wait_width = max(0.0, pct(step.started_at or now) - wait_left)
        if step.started_at is not None and run_end is not None:
            run_left = pct(step.started_at)
            run_width = max(0.15, pct(run_end) - run_left)
        parts = [f"{step.name}: {step.state}"]
        if queued_at is not None and step.started_at is not None:
            parts.append(f"queued {format_seconds((step.started_at - queued_at).total_seconds())}")
        if step.started_at is not None and run_end is not None:
            parts.append(f"ran {format_seconds((run_end - step.started_at).total_seconds())}")
        if step.attempt > 1:
            parts.append(f"attempt {step.attempt} of {step.max_attempts}")
        if step.id in critical:
            parts.append("on the critical path")
        lanes.append(
            Lane(
                id=step.id,
                name=step.name,
                state=step.state,
                attempt=step.attempt,
                max_attempts=step.max_attempts,
                queued_at=queued_at,
                started_at=step.started_at,
                finished_at=step.finished_at,
                wait_left=wait_left,
                wait_width=round(wait_width, 3),
                run_left=run_left,
                run_width=round(run_width, 3),
                critical=step.id in critical,
                title=" · ".join(parts),
            )
        )
    ticks = [
        (round(100 * fraction, 3), format_seconds(span * fraction))
        for fraction in (0, 0.25, 0.5, 0.75, 1)
    ]
    return {
        "lanes": lanes,
        "ticks": ticks,
        "span": format_seconds(span),
        "hidden": max(0, len(steps) - TIMELINE_ROWS),
        "critical": [lane.name for lane in lanes if lane.critical],
    }


def workflow_timeline(request: HttpRequest, workflow_id: Any) -> HttpResponse:
    refused = _refuse(request)
    if refused is not None:
        return refused
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    return render(
        request,
        "baton/live/workflow_timeline.html",
        {"workflow": workflow, "config": {"kind": "timeline"}, **timeline(workflow)},
    )
