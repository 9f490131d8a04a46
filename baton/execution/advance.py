"""Moving steps through their states, one transaction per move.

claim():   the runtime gate. A job may run perform() only if it is the step's current
           job and the step is runnable; the step becomes `executing` and its attempt
           counter is the fencing token for the finish.
finish():  records the attempt's outcome, fenced by (job id, attempt): a superseded
           attempt changes nothing. In the same transaction it stores the result,
           counts down dependents and enqueues those that became ready, cascades
           cancellations, and counts down the workflow, finishing it exactly once.

Every statement here runs on Django's connection (Procrastinate's database alias), so
jobs deferred through baton.execution.deferrer commit or roll back with baton's rows.
The number of statements per finish does not depend on the workflow's size, fan-in or
fan-out (the failure cascade adds a few per level of dependents it cancels).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from django.db import connections, transaction
from django.utils import timezone

from baton import signals
from baton.execution import local_worker, upstream
from baton.execution.deferrer import JobRequest, database_alias, defer_jobs, may_prepare
from baton.graph.states import StepState, WorkflowState, can_transition
from baton.llm.ledger import Call, Totals, calls_json
from baton.models import Step, Workflow

logger = logging.getLogger("baton")

S = StepState
_STEP_FIELDS = [field.attname for field in Step._meta.concrete_fields]
STEP_COLUMNS = ", ".join(f's."{field.column}"' for field in Step._meta.concrete_fields)


# ----------------------------------------------------------------------------- outcomes
# Every outcome carries the model calls its attempt recorded (baton.llm.ledger): they are
# stored by the statement that records the outcome, whatever it is (spent is spent).
@dataclasses.dataclass(frozen=True)
class Completed:
    value_json: str | None  # the result, serialised; None: no result
    size_bytes: int = 0
    calls: tuple[Call, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rescheduled:
    """Snoozed (attempt given back) or failed with attempts left (retryable)."""

    delay_seconds: float
    snooze: bool
    error: str = ""
    traceback: str = ""
    calls: tuple[Call, ...] = ()


@dataclasses.dataclass(frozen=True)
class Discarded:
    reason: str
    error: str = ""
    traceback: str = ""
    calls: tuple[Call, ...] = ()
    # Set on the workflow too, when it has none yet: why it will end failed.
    workflow_reason: str = ""


Outcome = Completed | Rescheduled | Discarded


@dataclasses.dataclass(frozen=True)
class WorkflowAtClaim:
    """What the claim read of the step's workflow, for decisions before perform()
    (the budget, debug capture) that must cost no query of their own."""

    budget_usd: Decimal | None = None
    cost_usd: Decimal | None = None
    debug: bool = False

    @property
    def budget_exceeded(self) -> bool:
        if self.budget_usd is None:
            return False
        return (self.cost_usd or Decimal(0)) >= self.budget_usd


@dataclasses.dataclass
class Claim:
    """A step as claimed by one job's attempt."""

    step: Step
    job_id: int
    attempt: int
    workflow: WorkflowAtClaim = dataclasses.field(default_factory=WorkflowAtClaim)


# ------------------------------------------------------------------------ announcements
class Announcements:
    """Transitions collected inside a transaction, sent as signals once it commits."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.transitions: list[tuple[Step, str, dict[str, Any]]] = []
        self.finished_workflows: list[tuple[Any, str]] = []
        self.due: list[datetime.datetime | None] = []

    def step(self, step: Step, old_state: str, **extra: Any) -> dict[str, Any]:
        """A transition to announce; `extra` goes to the signal's receivers as keywords
        (the workflow's running cost, when the transition recorded usage)."""
        if not can_transition(StepState(old_state), StepState(step.state)):
            # A bug, not the user's problem: say so loudly, never fail the step for it.
            logger.error(
                "baton: unexpected transition of step %s (%s): %s -> %s",
                step.name,
                step.id,
                old_state,
                step.state,
            )
        self.transitions.append((step, old_state, extra))
        return extra

    def register(self) -> None:
        transaction.on_commit(self._send, using=self.alias)

    def _send(self) -> None:
        for at in self.due:
            local_worker.job_due(at)
        for step, old_state, extra in self.transitions:
            _send_robustly(
                signals.step_transitioned,
                step=step,
                old_state=old_state,
                new_state=step.state,
                **extra,
            )
        if self.finished_workflows:
            workflows = Workflow.objects.using(self.alias).in_bulk(
                [workflow_id for workflow_id, _ in self.finished_workflows]
            )
            for workflow_id, state in self.finished_workflows:
                workflow = workflows.get(workflow_id)
                if workflow is not None:
                    _send_robustly(signals.workflow_finished, workflow=workflow, state=state)


def _send_robustly(signal: Any, **kwargs: Any) -> None:
    # A failing receiver must not fail the step whose transition it observes.
    for receiver, response in signal.send_robust(
        sender=Step if "step" in kwargs else Workflow, **kwargs
    ):
        if isinstance(response, Exception):
            logger.error(
                "baton signal receiver %r failed: %r", receiver, response, exc_info=response
            )


_CONVERTERS = [
    (index, field)
    for index, field in enumerate(Step._meta.concrete_fields)
    if hasattr(field, "from_db_value")
]


def steps_from_rows(rows: Iterable[Sequence[Any]], alias: str) -> list[Step]:
    """Step instances from raw rows of STEP_COLUMNS (plus anything after them)."""
    connection = connections[alias]
    steps = []
    for row in rows:
        values = list(row[: len(_STEP_FIELDS)])
        for index, field in _CONVERTERS:  # e.g. JSONField decodes its text
            values[index] = field.from_db_value(values[index], None, connection)
        steps.append(Step.from_db(alias, _STEP_FIELDS, values))
    return steps


# --------------------------------------------------------------------------------- claim
# The claim: a statement of its own (claim()), or folded into Procrastinate's fetch under
# baton's worker (FETCH_AND_CLAIM_SQL, one round trip fewer per step). Both make the same
# change under the same conditions.
# It also reads (without locking) the workflow's budget, running cost and debug flag, which
# decide before perform() whether an LLM step may call a model: WorkflowAtClaim.
_CLAIM_UPDATE = """
UPDATE baton_step s
   SET version = s.version + 1,
       state = 'executing', attempt = s.attempt + 1, started_at = now(),
       finished_at = NULL, scheduled_at = NULL
  FROM (SELECT id, state AS old_state, workflow_id FROM baton_step
         WHERE id = {step_id} FOR UPDATE) old,
       baton_workflow w
 WHERE s.id = {step_id} AND s.id = old.id AND s.job_id = {job_id}
   AND s.state IN ('available', 'scheduled', 'retryable', 'executing')
   AND (s.state <> 'executing' OR s.attempt < s.max_attempts)
   AND w.id = old.workflow_id
"""
_WORKFLOW_AT_CLAIM = ("budget_usd", "cost_usd", "debug")
_CLAIM_SQL = (
    _CLAIM_UPDATE.format(step_id="%(step_id)s", job_id="%(job_id)s")
    + f"RETURNING {STEP_COLUMNS}, old.old_state, "
    + ", ".join(f"w.{column}" for column in _WORKFLOW_AT_CLAIM)
)
# Procrastinate's fetch (upstream.FETCH_JOB), and the claim of the step named by the
# fetched job's args, in one autocommit statement. Only
# the step's own job can claim it (the job_id fence), so other tasks' jobs claim nothing;
# their columns come back NULL.
FETCH_AND_CLAIM_SQL = f"""
WITH job AS ({upstream.FETCH_JOB}
), claimed AS (
{
    _CLAIM_UPDATE.format(
        step_id="(SELECT (args->>'step_id')::bigint FROM job "
        "WHERE jsonb_typeof(args->'step_id') = 'number')",
        job_id="(SELECT id FROM job)",
    )
}
RETURNING {", ".join(f's."{f.column}" AS "baton_{f.attname}"' for f in Step._meta.concrete_fields)},
          old.old_state AS baton_old_state,
          {", ".join(f"w.{column} AS baton_workflow_{column}" for column in _WORKFLOW_AT_CLAIM)}
)
SELECT job.*, claimed.* FROM job LEFT JOIN claimed ON true
"""


def claimed_by_fetch(row: dict[str, Any]) -> tuple[list[Any], str, WorkflowAtClaim] | None:
    """The step row (values in field order), its old state and what it read of the
    workflow, as FETCH_AND_CLAIM_SQL claimed it, if it claimed one."""
    if row.get("baton_id") is None:
        return None
    workflow = WorkflowAtClaim(*(row[f"baton_workflow_{c}"] for c in _WORKFLOW_AT_CLAIM))
    return [row[f"baton_{name}"] for name in _STEP_FIELDS], row["baton_old_state"], workflow


def claim_fetched(
    values: list[Any], old_state: str, workflow: WorkflowAtClaim, job_id: int
) -> Claim:
    """claim()'s result for a step that the worker's fetch already claimed (committed)."""
    alias = database_alias()
    step = Step.from_db(alias, _STEP_FIELDS, values)
    announcements = Announcements(alias)
    announcements.step(step, old_state)
    announcements.register()
    return Claim(step=step, job_id=job_id, attempt=step.attempt, workflow=workflow)


def claim(step_id: int, job_id: int) -> Claim | None:
    """The runtime gate: make `step_id` executing for `job_id`, or None if it must not run."""
    alias = database_alias()
    announcements = Announcements(alias)
    params: dict[str, Any] = {"step_id": step_id, "job_id": job_id}
    # The usual case is this one statement, atomic by itself: no transaction block, so
    # no extra round trips (it joins the caller's transaction if there is one).
    rows = _execute_hot(alias, _CLAIM_SQL, params)
    if rows:
        row = rows[0]
        step = steps_from_rows([row], alias)[0]
        old_state, *workflow = row[len(_STEP_FIELDS) :]
        announcements.step(step, old_state)
        announcements.register()
        return Claim(
            step=step, job_id=job_id, attempt=step.attempt, workflow=WorkflowAtClaim(*workflow)
        )

    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        # Not claimable. The one case that still needs a write: this job's previous run
        # died during the step's last attempt; there is no attempt left to give it.
        cursor.execute(
            f"SELECT {STEP_COLUMNS} FROM baton_step s WHERE s.id = %s FOR UPDATE", [step_id]
        )
        row = cursor.fetchone()
        if row is None:
            logger.warning("baton: job %s names step %s, which no longer exists", job_id, step_id)
            return None
        step = steps_from_rows([row], alias)[0]
        if step.state == S.EXECUTING and step.job_id == job_id:
            _apply(
                cursor,
                Claim(step=step, job_id=job_id, attempt=step.attempt),
                Discarded(
                    reason=f"worker lost during its last attempt ({step.attempt} of "
                    f"{step.max_attempts})"
                ),
                announcements,
            )
            announcements.register()
        else:
            logger.info(
                "baton: job %s for step %s (%s) is stale; state is %s, current job %s",
                job_id,
                step.name,
                step_id,
                step.state,
                step.job_id,
            )
        return None


# -------------------------------------------------------------------------------- finish
def finish(claimed: Claim, outcome: Outcome) -> bool:
    """Record an attempt's outcome. False when the attempt was superseded (no change)."""
    alias = database_alias()
    announcements = Announcements(alias)
    if isinstance(outcome, Completed):
        applied = _complete(claimed, outcome, announcements)
    else:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            applied = _apply(cursor, claimed, outcome, announcements)
    if applied:
        announcements.register()
    if not applied:
        logger.warning(
            "baton: attempt %s of step %s (job %s) was superseded; its outcome is dropped",
            claimed.attempt,
            claimed.step.name,
            claimed.job_id,
        )
    return applied


def _apply(
    cursor: Any, claimed: Claim, outcome: Rescheduled | Discarded, ann: Announcements
) -> bool:
    step = claimed.step
    fence = {
        "id": step.id,
        "job_id": claimed.job_id,
        "attempt": claimed.attempt,
        "executing": S.EXECUTING.value,
    }
    fence_sql = (
        "WHERE s.id = %(id)s AND s.job_id = %(job_id)s AND s.attempt = %(attempt)s "
        "AND s.state = %(executing)s"
    )
    totals = Totals.of(outcome.calls)
    fence.update(cost=totals.cost_usd, unpriced=totals.unpriced_calls)

    if isinstance(outcome, Rescheduled):
        at = timezone.now() + datetime.timedelta(seconds=outcome.delay_seconds)
        new_state = S.SCHEDULED if outcome.snooze else S.RETRYABLE
        # The next attempt is a fresh job: the old one stays finished, so a late or
        # duplicate run of it fails the gate.
        (job_id,) = defer_jobs([job_request(step, at)])
        cursor.execute(
            f"""
            UPDATE baton_step s
               SET version = s.version + 1,
                   state = %(state)s, job_id = %(new_job)s, scheduled_at = %(at)s,
                   attempt = s.attempt - %(give_back)s, snoozes = s.snoozes + %(snoozed)s,
                   last_error = CASE WHEN %(error)s = '' THEN s.last_error ELSE %(error)s END,
                   traceback = CASE WHEN %(error)s = '' THEN s.traceback ELSE %(tb)s END,
                   {_ADD_STEP_COST}
             {fence_sql}
         RETURNING {STEP_COLUMNS}
            """,
            {
                **fence,
                "state": new_state.value,
                "new_job": job_id,
                "at": at,
                "give_back": int(outcome.snooze),
                "snoozed": int(outcome.snooze),
                "error": outcome.error,
                "tb": outcome.traceback,
            },
        )
        rows = cursor.fetchall()
        if not rows:
            transaction.set_rollback(True, using=ann.alias)  # takes the new job back too
            return False
        extra = ann.step(steps_from_rows(rows, ann.alias)[0], S.EXECUTING)
        extra.update(_store_calls(cursor, claimed, outcome.calls, totals))
        ann.due.append(at)
        return True

    cursor.execute(
        f"""
        UPDATE baton_step s
           SET version = s.version + 1,
               state = %(discarded)s, finished_at = now(), reason = %(reason)s,
               last_error = CASE WHEN %(error)s = '' THEN s.last_error ELSE %(error)s END,
               traceback = CASE WHEN %(error)s = '' THEN s.traceback ELSE %(tb)s END,
               {_ADD_STEP_COST}
         {fence_sql}
     RETURNING {STEP_COLUMNS}
        """,
        {
            **fence,
            "discarded": S.DISCARDED.value,
            "reason": outcome.reason,
            "error": outcome.error,
            "tb": outcome.traceback,
        },
    )
    rows = cursor.fetchall()
    if not rows:
        return False
    failed = steps_from_rows(rows, ann.alias)[0]
    extra = ann.step(failed, S.EXECUTING)
    # A failure with a workflow reason (the budget) fails the workflow even when every
    # dependent ignores it: the work it stood for was not done.
    fail_steps(cursor, [failed], ann, unabsorbed={failed.id} if outcome.workflow_reason else ())
    # After the cascade, which locked the workflow row last (the one lock order).
    extra.update(_store_calls(cursor, claimed, outcome.calls, totals, outcome.workflow_reason))
    return True


# Adds an attempt's calls to the step's running totals, in the statement that records
# the attempt's outcome.
_ADD_STEP_COST = """cost_usd = CASE WHEN %(cost)s::numeric IS NULL THEN s.cost_usd
                                 ELSE COALESCE(s.cost_usd, 0) + %(cost)s::numeric END,
                   unpriced_calls = s.unpriced_calls + %(unpriced)s"""
_ADD_WORKFLOW_COST = """cost_usd = CASE WHEN %(cost)s::numeric IS NULL THEN w.cost_usd
                                 ELSE COALESCE(w.cost_usd, 0) + %(cost)s::numeric END,
           unpriced_calls = w.unpriced_calls + %(unpriced)s"""
_LEDGER_COLUMNS = (
    "call_key text, model text, provider text, input_tokens bigint, output_tokens bigint, "
    "cache_read_tokens bigint, cache_write_tokens bigint, latency_ms integer, cost_usd numeric"
)
# The ledger rows of an attempt, from the JSON array ledger.calls_json() makes; `done`
# is the recorded step (id, job_id, workflow_id).
_INSERT_CALLS = f"""
    INSERT INTO baton_llmusage (workflow_id, step_id, attempt, job_id, call_key, model, provider,
                                input_tokens, output_tokens, cache_read_tokens,
                                cache_write_tokens, latency_ms, cost_usd, created_at)
    SELECT d.workflow_id, d.id, %(attempt)s, d.job_id, u.call_key, u.model, u.provider,
           u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
           u.latency_ms, u.cost_usd, now()
      FROM done d CROSS JOIN jsonb_to_recordset(%(calls)s::jsonb) AS u({_LEDGER_COLUMNS})
        ON CONFLICT DO NOTHING
"""


def _store_calls(
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
            f"%(workflow_id)s::uuid AS workflow_id) {_INSERT_CALLS}",
            params,
        )
    cursor.execute(
        f"""
        UPDATE baton_workflow w
           SET {_ADD_WORKFLOW_COST},
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


def job_request(step: Step, at: datetime.datetime | None = None) -> JobRequest:
    return JobRequest(
        step_id=step.id,
        step_name=step.name,
        workflow_id=str(step.workflow_id),
        task_name=step.task_name,
        queue=step.queue,
        priority=step.priority,
        lock=step.lock,
        scheduled_at=at,
    )


# ------------------------------------------------------------------ releasing dependents
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
    step_cost = f",\n           {_ADD_STEP_COST}" if with_calls else ""
    usage = f"), usage AS ({_INSERT_CALLS}" if with_calls else ""
    workflow_cost = f"{_ADD_WORKFLOW_COST}," if with_calls else ""
    return f"""
WITH done AS (
    UPDATE baton_step s
       SET version = s.version + 1, state = 'completed', finished_at = now(){step_cost}
     WHERE s.id = %(id)s AND s.job_id = %(job_id)s AND s.attempt = %(attempt)s
       AND s.state = 'executing'
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
                          WHERE d.id = e.downstream_id AND d.state = 'waiting'
                            FOR UPDATE) d
), released AS (
    UPDATE baton_step s
       SET deps_pending = s.deps_pending - 1,
           state = CASE WHEN s.deps_pending = 1 THEN 'available' ELSE s.state END,
           version = s.version + CASE WHEN s.deps_pending = 1 THEN 1 ELSE 0 END,
           job_id = CASE WHEN s.deps_pending = 1
                         THEN nextval({upstream.JOB_ID_SEQUENCE})
                         ELSE s.job_id END
     WHERE s.id = ANY (ARRAY(SELECT id FROM locked))
 RETURNING {STEP_COLUMNS}
), jobs AS (
    {upstream.JOB_INSERT}
    SELECT s.job_id, s.queue, s.task_name, s.priority, s.lock,
           -- the same args as deferrer.defer_jobs writes (tests/test_release.py)
           jsonb_build_object('step_id', s.id, 'workflow_id', s.workflow_id::text,
                              'step', s.name)
      FROM released s WHERE s.state = 'available'
), wf AS (
    UPDATE baton_workflow w
       SET {workflow_cost}
           unfinished_steps = w.unfinished_steps - 1,
           state = CASE WHEN w.unfinished_steps = 1 AND w.state = 'executing'
                        THEN CASE WHEN jsonb_array_length(w.failed_steps) > 0
                                  THEN 'failed' ELSE 'completed' END
                        ELSE w.state END,
           finished_at = CASE WHEN w.unfinished_steps = 1 AND w.state = 'executing'
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
  LEFT JOIN released s ON s.state = 'available'
"""


def _compact(sql: str) -> str:
    """The statement without its comments and runs of whitespace: psycopg caches the
    conversion of a query's %(name)s placeholders only for queries under 4,096 bytes,
    so a longer one is converted again at every step."""
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return " ".join(" ".join(lines).split())


_COMPLETE_SQL = _compact(_complete_sql(with_calls=False))
_COMPLETE_WITH_CALLS_SQL = _compact(_complete_sql(with_calls=True))
# Columns before the released dependents' STEP_COLUMNS in a completion's rows.
_COMPLETE_LEAD = 7


def _execute_hot(alias: str, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run one of the per-step statements (claim, completion) and return its rows.

    Django binds parameters on the client, so Postgres would parse and plan these
    statements at every step, which costs more than running them. They run instead on a
    psycopg cursor with server-side binding on the same connection (so in the same
    transaction, if any) and are prepared once per connection: psycopg's preparation,
    which Django turns off for the whole connection, is turned on for these two only
    (see deferrer.may_prepare). While Django captures queries (CaptureQueriesContext,
    DEBUG), its own cursor runs them, so they are counted.
    """
    wrapper = connections[alias]
    if wrapper.queries_logged:
        with wrapper.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not may_prepare(alias):
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    threshold = raw.prepare_threshold
    if threshold is None:
        # Only queries executed with prepare=True are prepared at this threshold; it is
        # put back before any other query runs on this (thread's) connection.
        raw.prepare_threshold = _PREPARE_WHEN_ASKED
    try:
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=True)
            return list(cursor.fetchall())
    finally:
        raw.prepare_threshold = threshold


_PREPARE_WHEN_ASKED = 2**31


def _complete(claimed: Claim, outcome: Completed, ann: Announcements) -> bool:
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
    rows = _execute_hot(
        ann.alias, _COMPLETE_WITH_CALLS_SQL if outcome.calls else _COMPLETE_SQL, params
    )
    if not rows:
        return False  # superseded
    version, finished_at, unfinished, state, job_finished, wf_cost, wf_unpriced = rows[0][
        :_COMPLETE_LEAD
    ]
    # Nothing else on the step's row changes while it executes (the fence proves it was
    # still this attempt's): the claimed row plus the completion's changes.
    done = _changed(
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
    if unfinished == 0 and state in (WorkflowState.COMPLETED, WorkflowState.FAILED):
        # Only this statement could bring the countdown to zero, so only it gets here.
        ann.finished_workflows.append((done.workflow_id, state))
    return True


def _changed(step: Step, **values: Any) -> Step:
    """A new instance of `step` with some fields changed (observers may hold the old one)."""
    return Step.from_db(
        step._state.db, _STEP_FIELDS, [values.get(f, getattr(step, f)) for f in _STEP_FIELDS]
    )


def enqueue(cursor: Any, steps: Sequence[Step], ann: Announcements) -> None:
    """Defer one job per step and make the steps available (one statement each)."""
    if not steps:
        return
    job_ids = defer_jobs([job_request(step) for step in steps])
    cursor.execute(
        f"""
        UPDATE baton_step s
           SET version = s.version + 1,
               state = %(available)s, job_id = v.job_id, scheduled_at = NULL
          FROM unnest(%(ids)s::bigint[], %(jobs)s::bigint[]) AS v(id, job_id),
               (SELECT id, state AS old_state FROM baton_step
                 WHERE id = ANY(%(ids)s) FOR UPDATE) old
         WHERE s.id = v.id AND old.id = s.id
     RETURNING {STEP_COLUMNS}, old.old_state
        """,
        {"available": S.AVAILABLE.value, "ids": [step.id for step in steps], "jobs": job_ids},
    )
    # Inserting the jobs NOTIFYs every worker on their queues; no local wake-up needed.
    for row in cursor.fetchall():
        ann.step(steps_from_rows([row], ann.alias)[0], row[-1])


# ------------------------------------------------------------------ the failure cascade
def _ignores(step_row: dict[str, Any], kind: str) -> bool:
    if kind == S.DISCARDED:
        return bool(step_row["ignore_discarded"])
    return bool(step_row["ignore_cancelled"])


def fail_steps(
    cursor: Any,
    failed: Sequence[Step],
    ann: Announcements,
    unabsorbed: Collection[int] = (),
) -> None:
    """Steps just became discarded or cancelled: cascade to their dependents, then count
    the workflow down. A dependent that ignores the failure's kind counts it as done;
    any other waiting dependent is cancelled with the reason, transitively. The steps
    named by `unabsorbed` fail the workflow even if every dependent ignores them."""
    if not failed:
        return
    by_workflow: dict[Any, tuple[int, list[str]]] = defaultdict(lambda: (0, []))
    frontier: list[tuple[int, str, str, Any]] = [
        (step.id, step.name, step.state, step.workflow_id) for step in failed
    ]
    for step in failed:
        count, names = by_workflow[step.workflow_id]
        by_workflow[step.workflow_id] = (count + 1, names)

    while frontier:
        failed_by_id = {step_id: (name, kind, wf) for step_id, name, kind, wf in frontier}
        cursor.execute(
            """
            SELECT e.upstream_id, d.id, d.state, d.ignore_cancelled, d.ignore_discarded
              FROM baton_stepdependency e JOIN baton_step d ON d.id = e.downstream_id
             WHERE e.upstream_id = ANY(%s)
             ORDER BY d.id
               FOR UPDATE OF d
            """,
            [list(failed_by_id)],
        )
        dependents_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
        failed_deps_of: dict[int, list[int]] = defaultdict(list)
        rows_by_id: dict[int, dict[str, Any]] = {}
        for upstream_id, dep_id, state, ignore_cancelled, ignore_discarded in cursor.fetchall():
            row = {
                "id": dep_id,
                "state": state,
                "ignore_cancelled": ignore_cancelled,
                "ignore_discarded": ignore_discarded,
            }
            rows_by_id[dep_id] = row
            dependents_of[upstream_id].append(row)
            failed_deps_of[dep_id].append(upstream_id)

        # A failure is absorbed when every dependent ignores it; otherwise it is one of
        # the failures that make the workflow `failed`.
        for step_id, (name, kind, workflow_id) in failed_by_id.items():
            dependents = dependents_of.get(step_id, [])
            absorbed = bool(dependents) and all(_ignores(row, kind) for row in dependents)
            if step_id in unabsorbed or not absorbed:
                count, names = by_workflow[workflow_id]
                names.append(name)
                by_workflow[workflow_id] = (count, names)

        to_cancel: dict[int, str] = {}
        to_decrement: dict[int, int] = {}
        for dep_id, upstream_ids in failed_deps_of.items():
            if rows_by_id[dep_id]["state"] != S.WAITING:
                continue
            blocking = [
                u for u in upstream_ids if not _ignores(rows_by_id[dep_id], failed_by_id[u][1])
            ]
            if blocking:
                name, kind, _ = failed_by_id[blocking[0]]
                to_cancel[dep_id] = f"dep {name} {kind}"
            else:
                to_decrement[dep_id] = len(upstream_ids)

        frontier = []
        if to_cancel:
            cursor.execute(
                f"""
                UPDATE baton_step s
                   SET version = s.version + 1,
                       state = %(cancelled)s, reason = v.reason, finished_at = now()
                  FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS v(id, reason)
                 WHERE s.id = v.id AND s.state = %(waiting)s
             RETURNING {STEP_COLUMNS}
                """,
                {
                    "cancelled": S.CANCELLED.value,
                    "waiting": S.WAITING.value,
                    "ids": list(to_cancel),
                    "reasons": list(to_cancel.values()),
                },
            )
            for step in steps_from_rows(cursor.fetchall(), ann.alias):
                ann.step(step, S.WAITING)
                frontier.append((step.id, step.name, S.CANCELLED.value, step.workflow_id))
                count, names = by_workflow[step.workflow_id]
                by_workflow[step.workflow_id] = (count + 1, names)
        if to_decrement:
            cursor.execute(
                f"""
                UPDATE baton_step s SET deps_pending = s.deps_pending - v.n
                  FROM unnest(%(ids)s::bigint[], %(ns)s::int[]) AS v(id, n)
                 WHERE s.id = v.id AND s.state = %(waiting)s
             RETURNING {STEP_COLUMNS}
                """,
                {
                    "waiting": S.WAITING.value,
                    "ids": list(to_decrement),
                    "ns": list(to_decrement.values()),
                },
            )
            ready = [
                s for s in steps_from_rows(cursor.fetchall(), ann.alias) if s.deps_pending == 0
            ]
            enqueue(cursor, ready, ann)

    for workflow_id, (count, names) in by_workflow.items():
        _count_down_workflow(cursor, workflow_id, terminal=count, failed_names=names, ann=ann)


# ------------------------------------------------------------------- finishing workflows
def _count_down_workflow(
    cursor: Any,
    workflow_id: Any,
    *,
    terminal: int,
    failed_names: list[str],
    ann: Announcements,
) -> None:
    # Locks the workflow row until commit, last in the transaction so it is held briefly;
    # the completion that reaches zero finishes the workflow, and only that one.
    cursor.execute(
        """
        UPDATE baton_workflow
           SET unfinished_steps = unfinished_steps - %(n)s,
               failed_steps = failed_steps || %(names)s::jsonb
         WHERE id = %(id)s
     RETURNING unfinished_steps, state, failed_steps
        """,
        {"n": terminal, "names": json.dumps(failed_names), "id": workflow_id},
    )
    row = cursor.fetchone()
    if row is not None:
        unfinished, state, failed = row
        _maybe_finish_workflow(cursor, workflow_id, unfinished, state, failed, ann)


def _maybe_finish_workflow(
    cursor: Any,
    workflow_id: Any,
    unfinished: int | None,
    state: str | None,
    all_failed: Any,
    ann: Announcements,
) -> None:
    """Finish the workflow if its countdown reached zero (the caller holds its row lock)."""
    if isinstance(all_failed, str):  # Django has psycopg hand jsonb over as text
        all_failed = json.loads(all_failed)
    if unfinished == 0 and state == WorkflowState.EXECUTING:
        outcome = WorkflowState.FAILED if all_failed else WorkflowState.COMPLETED
        cursor.execute(
            "UPDATE baton_workflow SET state = %s, finished_at = now() "
            "WHERE id = %s AND state = %s",
            [outcome.value, workflow_id, WorkflowState.EXECUTING.value],
        )
        if cursor.rowcount:
            ann.finished_workflows.append((workflow_id, outcome.value))
