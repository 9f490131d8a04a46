"""What model calls used and cost, per workflow, per step and per model: ORM aggregates
over the ledger (baton.models.LLMUsage), each served by one of its indexes.

Costs are Decimals; ``cost_usd`` is None when none of the calls counted was priced (an
unknown price is unknown, never 0), and ``unpriced_calls`` says how many were not.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from baton.models import LLMUsage, Workflow

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

# Aggregated under other names than the fields': an alias equal to a field name would
# shadow the field in the unpriced filter.
_AGGREGATES: dict[str, Any] = {
    **{f"sum_{name}": Sum(name) for name in TOKEN_FIELDS},
    "sum_cost_usd": Sum("cost_usd"),
    "sum_calls": Count("id"),
    "sum_unpriced_calls": Count("id", filter=Q(cost_usd__isnull=True)),
}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    totals = {key: value for key, value in row.items() if not key.startswith("sum_")}
    # Sum over no rows is NULL: no tokens is 0, but no priced call stays None.
    for name in TOKEN_FIELDS:
        totals[name] = row[f"sum_{name}"] or 0
    cost = row["sum_cost_usd"]
    totals["cost_usd"] = None if cost is None else Decimal(cost)
    totals["calls"] = row["sum_calls"]
    totals["unpriced_calls"] = row["sum_unpriced_calls"]
    return totals


def _calls(workflow: Workflow | Any) -> QuerySet[LLMUsage]:
    workflow_id = workflow.pk if isinstance(workflow, Workflow) else workflow
    return LLMUsage.objects.filter(workflow_id=workflow_id)


def workflow_totals(workflow: Workflow | Any) -> dict[str, Any]:
    """Tokens by kind, ``cost_usd``, ``calls`` and ``unpriced_calls`` of a workflow (or
    a workflow id), over every attempt of every step."""
    return _clean(_calls(workflow).aggregate(**_AGGREGATES))


def steps_for_workflow(workflow: Workflow | Any) -> list[dict[str, Any]]:
    """The same per step that recorded calls, in step order; ``step`` is its name."""
    rows = (
        _calls(workflow).values("step_id", "step__name").annotate(**_AGGREGATES).order_by("step_id")
    )
    result = []
    for row in rows:
        totals = _clean(dict(row))
        totals["step"] = totals.pop("step__name")
        result.append(totals)
    return result


def cost_by_model(
    since: datetime.datetime | None = None, until: datetime.datetime | None = None
) -> list[dict[str, Any]]:
    """The same per model over calls recorded in [since, until), most expensive first;
    ``cost_usd`` is None for a model none of whose calls was priced."""
    calls = LLMUsage.objects.all()
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    if until is not None:
        calls = calls.filter(created_at__lt=until)
    rows = calls.values("model").annotate(**_AGGREGATES).order_by("model")
    result = [_clean(dict(row)) for row in rows]
    # Unknown cost sorts after every known one; ties by name.
    result.sort(key=lambda row: (row["cost_usd"] is None, -(row["cost_usd"] or 0)))
    return result
