"""The live pages: a list of workflows, a page per workflow drawing its graph, and the
workflow's timeline.

They render everything the user needs without JavaScript (states as words and as
``data-state``); live.js then opens a WebSocket (baton/live/consumers.py), applies the
snapshot it receives and every delta after it. Staff, or the ``baton.view_workflow``
permission, may look; anyone else is sent to log in (anonymous) or refused (403).

Beside this module: access.py (who may look and act), queries.py (what pages and
sockets read), progress.py (buckets and bars), drawing.py (the graph), timeline.py (the
Gantt), actions.py (cancel and retry, POST).
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from baton.broadcast import decimal_text, workflow_payload
from baton.display import format_seconds, format_usd
from baton.graph.states import TERMINAL_STEP_STATES
from baton.listing import CountedPaginator
from baton.live import drawing as graph_drawing  # its MAX_DRAWN_EDGES read per request
from baton.live.access import can_change, refusal
from baton.live.drawing import DRAWN_STEP_FIELDS, GROUP_THRESHOLD, NODE_HEIGHT, NODE_WIDTH, draw
from baton.live.progress import STEP_STATES, bucket_counts, progress_bar
from baton.live.queries import (
    WORKFLOW_STATES,
    filtered_workflows,
    list_filters,
    state_counts,
    step_counts,
)
from baton.live.timeline import timeline
from baton.models import StepDependency, Workflow, WorkflowStep

WORKFLOWS_PER_PAGE = 50
SOCKET_PREFIX = "/ws/baton/workflows/"
TERMINAL_STATES = sorted(state.value for state in TERMINAL_STEP_STATES)


def workflow_duration(workflow: Workflow, now: datetime.datetime | None = None) -> str:
    end = workflow.finished_at or now or timezone.now()
    return format_seconds(max(0.0, (end - workflow.created_at).total_seconds()))


def workflow_list(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
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
    refused = refusal(request)
    if refused is not None:
        return refused
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    steps = list(
        WorkflowStep.objects.filter(workflow=workflow).order_by("id").only(*DRAWN_STEP_FIELDS)
    )
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
            "max_drawn_edges": graph_drawing.MAX_DRAWN_EDGES,
            "group_threshold": GROUP_THRESHOLD,
            "bar": progress_bar(bucket_counts([step.state for step in steps])),
            "collapse_url": graph_drawing.expand_query(set()) if drawing.expanded else "",
            "can_change": can_change(request.user),
        },
    )


def workflow_timeline(request: HttpRequest, workflow_id: Any) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    return render(
        request,
        "baton/live/workflow_timeline.html",
        {"workflow": workflow, "config": {"kind": "timeline"}, **timeline(workflow)},
    )
