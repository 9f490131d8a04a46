"""Broadcasting transitions over a Channels layer, for the live page.

With BATON["CHANNEL_LAYER"] set, every step transition and workflow finish is sent, after
commit, to the group of its workflow and to the group of the workflow list. A broadcast
failure is logged and never fails the step.

Money is sent as the Decimal's exact digits in a string ("0.000354"), or null for
unknown: never a float, so nothing is rounded on the way to the page.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync

from baton import signals
from baton.conf import settings

logger = logging.getLogger("baton")

WORKFLOW_LIST_GROUP = "baton.workflows"
MESSAGE_TYPE = "baton.event"  # consumers handle it in a method named baton_event


def workflow_group(workflow_id: Any) -> str:
    # Channels group names: ASCII letters, digits, hyphens, underscores, periods; < 100.
    return f"baton.workflow.{workflow_id}"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def decimal_text(value: Decimal | None) -> str | None:
    """A Decimal's exact value as plain digits ("0.000354", "2"), or None.

    Trailing zeros of the column's scale go ("0.000354000000000" -> "0.000354"); never an
    exponent (a JSON reader need not know that "3.54E-4" is a number)."""
    if value is None:
        return None
    # Not normalize(): it rounds to the context's 28 digits, the column holds 30.
    text = format(Decimal(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def step_payload(step: Any, old_state: str | None = None) -> dict[str, Any]:
    return {
        "id": step.id,
        "name": step.name,
        "state": step.state,
        "old_state": old_state,
        "version": step.version,
        "attempt": step.attempt,
        "max_attempts": step.max_attempts,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "reason": step.reason,
        "cost_usd": decimal_text(step.cost_usd),
        "unpriced_calls": step.unpriced_calls,
    }


def workflow_payload(workflow: Any) -> dict[str, Any]:
    return {
        "id": str(workflow.pk),
        "name": workflow.name,
        "state": workflow.state,
        "step_count": workflow.step_count,
        "unfinished_steps": workflow.unfinished_steps,
        "created_at": _iso(workflow.created_at),
        "finished_at": _iso(workflow.finished_at),
        "cost_usd": decimal_text(workflow.cost_usd),
        "unpriced_calls": workflow.unpriced_calls,
        "budget_usd": decimal_text(workflow.budget_usd),
        "reason": workflow.reason,
    }


def send(groups: list[str], event: dict[str, Any]) -> None:
    alias = settings.CHANNEL_LAYER
    if not alias:
        return
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer(alias)
        if layer is None:
            return
        message = {"type": MESSAGE_TYPE, **event}
        for group in groups:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # a broadcast failure must never fail a step
        logger.exception("baton: broadcasting %s failed", event.get("event"))


def on_step_transitioned(
    sender: Any, step: Any, old_state: str, new_state: str, **kwargs: Any
) -> None:
    if not settings.CHANNEL_LAYER:  # every step sends two: build no payload for nobody
        return
    workflow_id = str(step.workflow_id)
    event: dict[str, Any] = {
        "event": "step",
        "workflow_id": workflow_id,
        "step": step_payload(step, old_state),
    }
    # A transition that recorded model calls comes with the workflow's running totals
    # after it: pages update their totals from the event, without a query.
    if "workflow_cost_usd" in kwargs or "workflow_unpriced_calls" in kwargs:
        event["workflow_cost_usd"] = decimal_text(kwargs.get("workflow_cost_usd"))
        event["workflow_unpriced_calls"] = int(kwargs.get("workflow_unpriced_calls") or 0)
    send([workflow_group(workflow_id), WORKFLOW_LIST_GROUP], event)


def on_workflow_finished(sender: Any, workflow: Any, state: str, **kwargs: Any) -> None:
    if not settings.CHANNEL_LAYER:
        return
    workflow_id = str(workflow.pk)
    send(
        [workflow_group(workflow_id), WORKFLOW_LIST_GROUP],
        {"event": "workflow", "workflow_id": workflow_id, "workflow": workflow_payload(workflow)},
    )


def on_workflow_inserted(workflow: Any) -> None:
    """A new workflow: the list pages show it before any of its steps moves."""
    send(
        [WORKFLOW_LIST_GROUP],
        {
            "event": "workflow",
            "workflow_id": str(workflow.pk),
            "workflow": workflow_payload(workflow),
        },
    )


def connect() -> None:
    signals.step_transitioned.connect(on_step_transitioned, dispatch_uid="baton.broadcast.step")
    signals.workflow_finished.connect(on_workflow_finished, dispatch_uid="baton.broadcast.workflow")
