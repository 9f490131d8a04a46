"""What the live pages and their sockets read: workflows filtered and counted, step
counts per bucket, and the snapshots a socket sends first."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Count
from django.http import HttpRequest

from baton.broadcast import step_payload, workflow_payload
from baton.graph.states import WorkflowState
from baton.live.progress import bucket, bucket_counts
from baton.models import Workflow, WorkflowStep

WORKFLOW_STATES = [state.value for state in WorkflowState]


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
        WorkflowStep.objects.filter(workflow_id__in=workflow_ids)
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
    steps = WorkflowStep.objects.filter(workflow_id=workflow_id).only(
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
