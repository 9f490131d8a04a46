"""The live pages: a list of workflows and a page per workflow drawing its graph.

Both render everything the user needs without JavaScript (states as words and as
``data-state``); live.js then opens a WebSocket (baton/live/consumers.py), applies the
snapshot it receives and every delta after it. Staff, or the ``baton.view_workflow``
permission, may look; anyone else is sent to log in (anonymous) or refused (403).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.conf import global_settings
from django.conf import settings as django_settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from baton.broadcast import decimal_text, step_payload, workflow_payload
from baton.display import format_seconds, format_usd
from baton.graph.states import TERMINAL_STEP_STATES, StepState, WorkflowState
from baton.live.layout import layout
from baton.models import Step, StepDependency, Workflow

VIEW_PERMISSION = "baton.view_workflow"
WORKFLOWS_PER_PAGE = 50
# Above this many edges the graph is drawn without them (a note says so): the nodes stay
# readable and the page light.
MAX_DRAWN_EDGES = 5_000
# Above this many edges they are drawn fainter: wide fans otherwise become grey blocks.
DENSE_EDGES = 300
# Node geometry in SVG user units.
NODE_WIDTH = 184
NODE_HEIGHT = 42
COLUMN_PITCH = NODE_WIDTH + 76
ROW_PITCH = NODE_HEIGHT + 14
MARGIN = 16
NAME_CHARS = 22  # characters of a step name drawn in its node; the full name is its title
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


def workflow_summaries(workflows: QuerySet[Workflow]) -> list[dict[str, Any]]:
    """What the list page shows of each workflow: broadcast's workflow payload."""
    return [workflow_payload(workflow) for workflow in workflows]


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


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def node_title(step: Step) -> str:
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
class Drawing:
    nodes: list[DrawnNode]
    edge_path: str
    edge_count: int
    edges_drawn: bool
    dense: bool
    width: int
    height: int


def draw(steps: list[Step], edges: list[tuple[int, int]]) -> Drawing:
    """Place each step (layout.py) and turn the edges into one SVG path."""
    graph = layout([step.id for step in steps], edges)
    columns = max(graph.columns, 1)
    rows = max(graph.rows, 1)
    points: dict[int, tuple[int, int]] = {}
    nodes = []
    for step in steps:
        column, row = graph.positions[step.id]
        # Narrow columns sit in the middle of the widest one.
        offset = (graph.rows - graph.column_sizes[column]) / 2
        x = MARGIN + column * COLUMN_PITCH
        y = MARGIN + round((row + offset) * ROW_PITCH)
        points[step.id] = (x, y)
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
                x=x,
                y=y,
            )
        )
    edges_drawn = len(edges) <= MAX_DRAWN_EDGES
    segments = []
    if edges_drawn:
        half = NODE_HEIGHT // 2
        bend = (COLUMN_PITCH - NODE_WIDTH) // 2
        for upstream, downstream in edges:
            x1, y1 = points[upstream]
            x2, y2 = points[downstream]
            x1, y1, y2 = x1 + NODE_WIDTH, y1 + half, y2 + half
            segments.append(f"M{x1} {y1}C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}")
    return Drawing(
        nodes=nodes,
        edge_path="".join(segments),
        edge_count=len(edges),
        edges_drawn=edges_drawn,
        dense=len(edges) > DENSE_EDGES,
        width=2 * MARGIN + (columns - 1) * COLUMN_PITCH + NODE_WIDTH,
        height=2 * MARGIN + (rows - 1) * ROW_PITCH + NODE_HEIGHT,
    )


# ------------------------------------------------------------------------------ views
def workflow_list(request: HttpRequest) -> HttpResponse:
    refused = _refuse(request)
    if refused is not None:
        return refused
    workflows = Workflow.objects.order_by("-created_at", "-pk")
    page = Paginator(workflows, WORKFLOWS_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    rows = [
        {
            "workflow": workflow,
            "done": workflow.step_count - workflow.unfinished_steps,
            "percent": round(100 * workflow.progress),
            "duration": workflow_duration(workflow, now),
            "cost": format_usd(workflow.cost_usd, workflow.unpriced_calls),
            "cost_usd": decimal_text(workflow.cost_usd) or "",
        }
        for workflow in page.object_list
    ]
    config = {
        "kind": "list",
        "socket": f"{SOCKET_PREFIX}?page={page.number}",
        "page": page.number,
        "detailUrl": reverse("baton:workflow", args=["00000000-0000-0000-0000-000000000000"]),
    }
    return render(
        request,
        "baton/live/workflow_list.html",
        {
            "page": page,
            "rows": rows,
            "config": config,
            "workflow_states": WORKFLOW_STATES,
        },
    )


def workflow_detail(request: HttpRequest, workflow_id: Any) -> HttpResponse:
    refused = _refuse(request)
    if refused is not None:
        return refused
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    steps = list(Step.objects.filter(workflow=workflow).order_by("id").only(*DRAWN_STEP_FIELDS))
    edges = list(
        StepDependency.objects.filter(workflow=workflow)
        .order_by("id")
        .values_list("upstream_id", "downstream_id")
    )
    drawing = draw(steps, edges)
    done = sum(1 for step in steps if step.state in TERMINAL_STEP_STATES)
    config = {
        "kind": "workflow",
        "socket": f"{SOCKET_PREFIX}{workflow.pk}/",
        "workflow": workflow_payload(workflow),
        "terminal": TERMINAL_STATES,
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
        },
    )
