"""The completion: a successful attempt, in one statement.

See _complete_sql for what that statement does and in which order it locks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import connections

from baton.execution import local_worker, upstream
from baton.execution.announce import Announcements
from baton.execution.attempt import Claim, Completed
from baton.execution.recording import ADD_STEP_COST, ADD_WORKFLOW_COST, INSERT_CALLS
from baton.execution.statements import (
    STEP_COLUMNS,
    changed_step,
    compact,
    execute_hot,
    sql_state,
    steps_from_rows,
)
from baton.graph.states import StepState, WorkflowState
from baton.llm.ledger import Totals, calls_json

S = StepState
W = WorkflowState
# State names as SQL literals, formatted into the statement when it is built at import:
# the same text as if written out, so the same prepared statement (and its length, which
# must stay within psycopg's cached length: tests/integration/test_query_budget.py).
_WAITING, _AVAILABLE, _EXECUTING, _COMPLETED = map(
    sql_state, (S.WAITING, S.AVAILABLE, S.EXECUTING, S.COMPLETED)
)
_WF_EXECUTING, _WF_COMPLETED, _WF_FAILED = map(sql_state, (W.EXECUTING, W.COMPLETED, W.FAILED))


# A completion is one statement, atomic by itself and run outside any transaction
# block: it fences and completes the step, stores its result, counts down its waiting
# dependents, makes those that reach zero `available` and inserts their Procrastinate
# jobs (as procrastinate_defer_jobs_v1 does, with ids drawn first so the steps can name
# them), and counts down the workflow, finishing it when it reaches zero. Under baton's
# worker it also ends the step's own job as procrastinate_finish_job_v1 would (marks it
# succeeded, or deletes it), so the worker need not (local_worker.take_finished).
# Locks are taken in one order (the step, its dependents by id, then the workflow: `wf`
# reads `released`, so it runs after it), the order of every other transaction here, so
# completions cannot deadlock; the step's own job row is locked after the step, as the
# sweep does, and no other statement here waits for it. The contended rows (a fan-in
# step, the workflow) are held only for this one statement. Every CTE is keyed on
# `done`: a superseded attempt (the fenced update matches nothing) changes nothing.
# An attempt that recorded model calls runs the variant with `usage`, which also writes
# them to the ledger and adds them to the step's and the workflow's running totals; a
# plain step's statement is left without those parts.
def _complete_sql(with_calls: bool) -> str:
    step_cost = f",\n           {ADD_STEP_COST}" if with_calls else ""
    usage = f"), usage AS ({INSERT_CALLS}" if with_calls else ""
    workflow_cost = f"{ADD_WORKFLOW_COST}," if with_calls else ""
    return f"""
WITH done AS (
    UPDATE baton_step s
       SET version = s.version + 1, state = {_COMPLETED}, finished_at = now(){step_cost}
     WHERE s.id = %(id)s AND s.job_id = %(job_id)s AND s.attempt = %(attempt)s
       AND s.state = {_EXECUTING}
 RETURNING s.id, s.job_id, s.workflow_id, s.version, s.finished_at
), job_succeeded AS (
    UPDATE procrastinate_jobs j
       SET {upstream.FINISH_SUCCEEDED}
     WHERE %(finish_job)s AND NOT %(delete_job)s
       AND j.id = (SELECT job_id FROM done) AND j.status IN ('todo', 'doing')
 RETURNING j.id
), job_deleted AS (
    DELETE FROM procrastinate_jobs j
     WHERE %(finish_job)s AND %(delete_job)s
       AND j.id = (SELECT job_id FROM done) AND j.status IN ('todo', 'doing')
 RETURNING j.id
), stored AS (
    INSERT INTO baton_stepresult (step_id, value, size_bytes, created_at)
    SELECT id, %(value)s::jsonb, %(size)s, now() FROM done WHERE %(has_value)s
{usage}), locked AS (
    -- The waiting dependents, found from the step's edges and locked in id order. The
    -- fenced subqueries fix that plan: left to itself, with stale statistics (a large
    -- workflow inserted since the last ANALYZE) the planner reads every waiting step
    -- in the database per completion, and a prepared statement keeps that plan.
    SELECT d.id
      FROM (SELECT e.downstream_id FROM baton_stepdependency e
             WHERE e.upstream_id = (SELECT id FROM done)
             ORDER BY e.downstream_id OFFSET 0) e
     CROSS JOIN LATERAL (SELECT d.id FROM baton_step d
                          WHERE d.id = e.downstream_id AND d.state = {_WAITING}
                            FOR UPDATE) d
), released AS (
    UPDATE baton_step s
       SET deps_pending = s.deps_pending - 1,
           state = CASE WHEN s.deps_pending = 1 THEN {_AVAILABLE} ELSE s.state END,
           version = s.version + CASE WHEN s.deps_pending = 1 THEN 1 ELSE 0 END,
           job_id = CASE WHEN s.deps_pending = 1
                         THEN nextval({upstream.JOB_ID_SEQUENCE})
                         ELSE s.job_id END
     WHERE s.id = ANY (ARRAY(SELECT id FROM locked))
 RETURNING {STEP_COLUMNS}
), jobs AS (
    {upstream.JOB_INSERT}
    SELECT s.job_id, s.queue, s.task_name, s.priority, s.lock,
           -- the same args as deferrer.defer_jobs writes (tests/integration/test_release.py)
           jsonb_build_object('step_id', s.id, 'workflow_id', s.workflow_id::text,
                              'step', s.name)
      FROM released s WHERE s.state = {_AVAILABLE}
), wf AS (
    UPDATE baton_workflow w
       SET {workflow_cost}
           unfinished_steps = w.unfinished_steps - 1,
           state = CASE WHEN w.unfinished_steps = 1 AND w.state = {_WF_EXECUTING}
                        THEN CASE WHEN jsonb_array_length(w.failed_steps) > 0
                                  THEN {_WF_FAILED} ELSE {_WF_COMPLETED} END
                        ELSE w.state END,
           finished_at = CASE WHEN w.unfinished_steps = 1 AND w.state = {_WF_EXECUTING}
                              THEN now() ELSE w.finished_at END
     WHERE w.id = (SELECT workflow_id FROM done)
       AND (SELECT count(*) FROM released) >= 0
 RETURNING w.unfinished_steps, w.state, w.cost_usd, w.unpriced_calls
)
-- One row per dependent made available (or one with NULLs there), each led by what the
-- completion changed on the step (the rest of its row is the claimed one's).
SELECT d.version, d.finished_at, wf.unfinished_steps, wf.state,
       EXISTS (SELECT FROM job_succeeded) OR EXISTS (SELECT FROM job_deleted),
       wf.cost_usd, wf.unpriced_calls,
       s.*  -- released's columns: STEP_COLUMNS
  FROM done d LEFT JOIN wf ON true
  LEFT JOIN released s ON s.state = {_AVAILABLE}
"""


_COMPLETE_SQL = compact(_complete_sql(with_calls=False))
_COMPLETE_WITH_CALLS_SQL = compact(_complete_sql(with_calls=True))
# Columns before the released dependents' STEP_COLUMNS in a completion's rows.
_COMPLETE_LEAD = 7


def complete(claimed: Claim, outcome: Completed, ann: Announcements) -> bool:
    # Only a BatonWorker knows to skip its own finish_job call; inside the caller's
    # transaction (tests, in-process helpers) the job is left alone too.
    delete_job = local_worker.job_finishing()
    finish_job = delete_job is not None and not connections[ann.alias].in_atomic_block
    params: dict[str, Any] = {
        "id": claimed.step.id,
        "job_id": claimed.job_id,
        "attempt": claimed.attempt,
        "value": outcome.value_json,
        "has_value": outcome.value_json is not None,
        "size": outcome.size_bytes,
        "finish_job": finish_job,
        "delete_job": bool(delete_job),
    }
    step = claimed.step
    changes: dict[str, Any] = {}
    if outcome.calls:
        totals = Totals.of(outcome.calls)
        params.update(
            calls=calls_json(outcome.calls), cost=totals.cost_usd, unpriced=totals.unpriced_calls
        )
        changes["unpriced_calls"] = step.unpriced_calls + totals.unpriced_calls
        if totals.cost_usd is not None:
            changes["cost_usd"] = (step.cost_usd or Decimal(0)) + totals.cost_usd
    rows = execute_hot(
        ann.alias, _COMPLETE_WITH_CALLS_SQL if outcome.calls else _COMPLETE_SQL, params
    )
    if not rows:
        return False  # superseded
    version, finished_at, unfinished, state, job_finished, wf_cost, wf_unpriced = rows[0][
        :_COMPLETE_LEAD
    ]
    # Nothing else on the step's row changes while it executes (the fence proves it was
    # still this attempt's): the claimed row plus the completion's changes.
    done = changed_step(
        step, state=S.COMPLETED.value, version=version, finished_at=finished_at, **changes
    )
    extra = {}
    if outcome.calls:
        extra = {"workflow_cost_usd": wf_cost, "workflow_unpriced_calls": wf_unpriced}
    ann.step(done, S.EXECUTING, **extra)
    released = [row[_COMPLETE_LEAD:] for row in rows if row[_COMPLETE_LEAD] is not None]
    for step in steps_from_rows(released, ann.alias):  # their job INSERTs notify workers
        ann.step(step, S.WAITING)
    if job_finished:  # committed with the statement (autocommit)
        local_worker.job_finished(claimed.job_id)
    if unfinished == 0 and state in (W.COMPLETED, W.FAILED):
        # Only this statement could bring the countdown to zero, so only it gets here.
        ann.finished_workflows.append((done.workflow_id, state))
    return True
