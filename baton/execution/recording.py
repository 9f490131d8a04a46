"""Writing an attempt's model calls (baton.llm.ledger) with the attempt's outcome.

The completion folds these fragments into its one statement (complete.py); the failure
paths (fail.py) run store_calls() in their transaction.
"""

from __future__ import annotations

from typing import Any

from baton.execution.attempt import Claim
from baton.llm.ledger import Call, Totals, calls_json

# Adds an attempt's calls to the step's running totals, in the statement that records
# the attempt's outcome.
ADD_STEP_COST = """cost_usd = CASE WHEN %(cost)s::numeric IS NULL THEN s.cost_usd
                                 ELSE COALESCE(s.cost_usd, 0) + %(cost)s::numeric END,
                   unpriced_calls = s.unpriced_calls + %(unpriced)s"""
ADD_WORKFLOW_COST = """cost_usd = CASE WHEN %(cost)s::numeric IS NULL THEN w.cost_usd
                                 ELSE COALESCE(w.cost_usd, 0) + %(cost)s::numeric END,
           unpriced_calls = w.unpriced_calls + %(unpriced)s"""
_LEDGER_COLUMNS = (
    "call_key text, model text, provider text, input_tokens bigint, output_tokens bigint, "
    "cache_read_tokens bigint, cache_write_tokens bigint, latency_ms integer, cost_usd numeric"
)
# The ledger rows of an attempt, from the JSON array ledger.calls_json() makes; `done`
# is the recorded step (id, job_id, workflow_id).
INSERT_CALLS = f"""
    INSERT INTO baton_llmusage (workflow_id, step_id, attempt, job_id, call_key, model, provider,
                                input_tokens, output_tokens, cache_read_tokens,
                                cache_write_tokens, latency_ms, cost_usd, created_at)
    SELECT d.workflow_id, d.id, %(attempt)s, d.job_id, u.call_key, u.model, u.provider,
           u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
           u.latency_ms, u.cost_usd, now()
      FROM done d CROSS JOIN jsonb_to_recordset(%(calls)s::jsonb) AS u({_LEDGER_COLUMNS})
        ON CONFLICT DO NOTHING
"""


def store_calls(
    cursor: Any,
    claimed: Claim,
    calls: tuple[Call, ...],
    totals: Totals,
    workflow_reason: str = "",
) -> dict[str, Any]:
    """On the failure paths: write an attempt's calls to the ledger and add them to the
    workflow's running totals (the step's were added by its own update). Returns the
    workflow's new totals for the announcement, if it changed them."""
    if not calls and not workflow_reason:
        return {}
    step = claimed.step
    params = {
        "id": step.id,
        "job_id": claimed.job_id,
        "workflow_id": step.workflow_id,
        "attempt": claimed.attempt,
        "calls": calls_json(calls),
        "cost": totals.cost_usd,
        "unpriced": totals.unpriced_calls,
        "reason": workflow_reason,
    }
    if calls:
        cursor.execute(
            f"WITH done AS (SELECT %(id)s::bigint AS id, %(job_id)s::bigint AS job_id, "
            f"%(workflow_id)s::uuid AS workflow_id) {INSERT_CALLS}",
            params,
        )
    cursor.execute(
        f"""
        UPDATE baton_workflow w
           SET {ADD_WORKFLOW_COST},
               reason = CASE WHEN w.reason = '' THEN %(reason)s ELSE w.reason END
         WHERE w.id = %(workflow_id)s
     RETURNING w.cost_usd, w.unpriced_calls
        """,
        params,
    )
    row = cursor.fetchone()
    if row is None or not calls:
        return {}
    return {"workflow_cost_usd": row[0], "workflow_unpriced_calls": row[1]}
