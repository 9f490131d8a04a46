"""The workflow page's actions: cancel, retry, retry one step (POST, CSRF, and
``baton.change_workflow`` checked here whatever the page showed)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from baton.broadcast import workflow_payload
from baton.exceptions import BatonError
from baton.graph.states import WorkflowState
from baton.live.access import can_change
from baton.models import Workflow

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
