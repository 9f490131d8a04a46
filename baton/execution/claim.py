"""The claim: the runtime gate of a step's attempt.

A job may run perform() only if it is the step's current job and the step is runnable;
the step becomes `executing` and its attempt counter is the fencing token every later
move of the attempt checks.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, transaction

from baton.execution import upstream
from baton.execution.announce import Announcements, announcing
from baton.execution.attempt import Claim, Discarded, WorkflowAtClaim
from baton.execution.deferrer import database_alias
from baton.execution.fail import discard
from baton.execution.statements import (
    STEP_COLUMNS,
    STEP_FIELDS,
    execute_hot,
    sql_state,
    sql_states,
    steps_from_rows,
)
from baton.graph.states import StepState
from baton.models import WorkflowStep

logger = logging.getLogger("baton")
S = StepState


# The claim: a statement of its own (claim()), or folded into Procrastinate's fetch under
# baton's worker (FETCH_AND_CLAIM_SQL, one round trip fewer per step). Both make the same
# change under the same conditions.
# It also reads (without locking) the workflow's budget, running cost and debug flag, which
# decide before perform() whether an LLM step may call a model: WorkflowAtClaim.
# The states are formatted in at import time (the statement's text, which psycopg
# prepares, stays the same); {step_id} and {job_id} are filled in below.
_CLAIM_UPDATE = f"""
UPDATE baton_step s
   SET version = s.version + 1,
       state = {sql_state(S.EXECUTING)}, attempt = s.attempt + 1, started_at = now(),
       finished_at = NULL, scheduled_at = NULL
  FROM (SELECT id, state AS old_state, workflow_id FROM baton_step
         WHERE id = {{step_id}} FOR UPDATE) old,
       baton_workflow w
 WHERE s.id = {{step_id}} AND s.id = old.id AND s.job_id = {{job_id}}
   AND s.state IN ({sql_states(S.AVAILABLE, S.SCHEDULED, S.RETRYABLE, S.EXECUTING)})
   AND (s.state <> {sql_state(S.EXECUTING)} OR s.attempt < s.max_attempts)
   AND w.id = old.workflow_id
"""
_WORKFLOW_AT_CLAIM = ("budget_usd", "cost_usd", "debug", "trace_parent")
_CLAIM_SQL = (
    _CLAIM_UPDATE.format(step_id="%(step_id)s", job_id="%(job_id)s")
    + f"RETURNING {STEP_COLUMNS}, old.old_state, "
    + ", ".join(f"w.{column}" for column in _WORKFLOW_AT_CLAIM)
)
# Procrastinate's fetch of up to %(limit)s jobs (upstream.FETCH_JOBS), and the claim of
# the steps their args name, in one autocommit statement: the same change under the same
# conditions as _CLAIM_UPDATE, for every fetched job at once (rows locked in id order).
# Only a step's own job can claim it (the job_id fence), so other tasks' jobs claim
# nothing; their columns come back NULL.
FETCH_AND_CLAIM_SQL = f"""
WITH job AS ({upstream.FETCH_JOBS}
), fetched_step AS (
SELECT id AS job_id, CASE jsonb_typeof(args->'step_id')
                     WHEN 'number' THEN (args->>'step_id')::bigint END AS step_id FROM job
), old AS (
SELECT st.id, st.state AS old_state, st.workflow_id, f.job_id
  FROM baton_step st JOIN fetched_step f ON st.id = f.step_id
 WHERE st.id = ANY(ARRAY(SELECT step_id FROM fetched_step))
 ORDER BY st.id FOR UPDATE OF st
), claimed AS (
UPDATE baton_step s
   SET version = s.version + 1,
       state = {sql_state(S.EXECUTING)}, attempt = s.attempt + 1, started_at = now(),
       finished_at = NULL, scheduled_at = NULL
  FROM old, baton_workflow w
 WHERE s.id = old.id AND s.job_id = old.job_id
   AND s.state IN ({sql_states(S.AVAILABLE, S.SCHEDULED, S.RETRYABLE, S.EXECUTING)})
   AND (s.state <> {sql_state(S.EXECUTING)} OR s.attempt < s.max_attempts)
   AND w.id = old.workflow_id
RETURNING {
    ", ".join(f's."{f.column}" AS "baton_{f.attname}"' for f in WorkflowStep._meta.concrete_fields)
},
          old.old_state AS baton_old_state, old.job_id AS baton_job,
          {", ".join(f"w.{column} AS baton_workflow_{column}" for column in _WORKFLOW_AT_CLAIM)}
)
SELECT job.*, claimed.* FROM job LEFT JOIN claimed ON claimed.baton_job = job.id
 ORDER BY job.fetched
"""

# The same, passing over the jobs of the tasks in %(skip_tasks)s (upstream.FETCH_JOBS_SKIPPING):
# what a worker runs once it has met a task it does not have.
FETCH_AND_CLAIM_SKIPPING_SQL = FETCH_AND_CLAIM_SQL.replace(
    upstream.FETCH_JOBS, upstream.FETCH_JOBS_SKIPPING
)


def claimed_by_fetch(row: dict[str, Any]) -> tuple[list[Any], str, WorkflowAtClaim] | None:
    """The step row (values in field order), its old state and what it read of the
    workflow, as FETCH_AND_CLAIM_SQL claimed it, if it claimed one."""
    if row.get("baton_id") is None:
        return None
    workflow = WorkflowAtClaim(*(row[f"baton_workflow_{c}"] for c in _WORKFLOW_AT_CLAIM))
    return [row[f"baton_{name}"] for name in STEP_FIELDS], row["baton_old_state"], workflow


def claim_fetched(
    values: list[Any], old_state: str, workflow: WorkflowAtClaim, job_id: int
) -> Claim:
    """claim()'s result for a step that the worker's fetch already claimed (committed)."""
    alias = database_alias()
    step = WorkflowStep.from_db(alias, STEP_FIELDS, values)
    with announcing(alias) as announcements:
        announcements.step(step, old_state)
    return Claim(step=step, job_id=job_id, attempt=step.attempt, workflow=workflow)


def claim(step_id: int, job_id: int) -> Claim | None:
    """The runtime gate: make `step_id` executing for `job_id`, or None if it must not run."""
    alias = database_alias()
    params: dict[str, Any] = {"step_id": step_id, "job_id": job_id}
    with announcing(alias) as announcements:
        # The usual case is this one statement, atomic by itself: no transaction block, so
        # no extra round trips (it joins the caller's transaction if there is one).
        rows = execute_hot(alias, _CLAIM_SQL, params)
        if not rows:
            _refuse(step_id, job_id, announcements)
            return None
        row = rows[0]
        step = steps_from_rows([row], alias)[0]
        old_state, *workflow = row[len(STEP_FIELDS) :]
        announcements.step(step, old_state)
        return Claim(
            step=step, job_id=job_id, attempt=step.attempt, workflow=WorkflowAtClaim(*workflow)
        )


def _refuse(step_id: int, job_id: int, announcements: Announcements) -> None:
    """A job that may not run its step. The one case that still needs a write: this job's
    previous run died during the step's last attempt; there is no attempt left to give."""
    alias = announcements.alias
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute(
            f"SELECT {STEP_COLUMNS} FROM baton_step s WHERE s.id = %s FOR UPDATE", [step_id]
        )
        row = cursor.fetchone()
        if row is None:
            logger.warning("baton: job %s names step %s, which no longer exists", job_id, step_id)
            return
        step = steps_from_rows([row], alias)[0]
        if step.state == S.EXECUTING and step.job_id == job_id:
            discard(
                cursor,
                Claim(step=step, job_id=job_id, attempt=step.attempt),
                Discarded(
                    reason=f"worker lost during its last attempt ({step.attempt} of "
                    f"{step.max_attempts})"
                ),
                announcements,
            )
        else:
            logger.info(
                "baton: job %s for step %s (%s) is stale; state is %s, current job %s",
                job_id,
                step.name,
                step_id,
                step.state,
                step.job_id,
            )


def unclaim(values: list[Any], old_state: str) -> None:
    """Undo a claim the worker's fetch made for a job this worker cannot run (its task is
    not registered here): the step is queued again, as it was, for another worker. The
    fetch committed the claim; the version and job fence make this a no-op if anything
    moved the step since."""
    alias = database_alias()
    step = WorkflowStep.from_db(alias, STEP_FIELDS, values)
    # A due job was fetched, so a snoozed or backing-off step is due: available.
    state = S.EXECUTING if old_state == S.EXECUTING else S.AVAILABLE
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
            UPDATE baton_step SET version = version + 1, state = %s, attempt = attempt - 1,
                   started_at = NULL
             WHERE id = %s AND job_id = %s AND version = %s AND state = %s
            """,
            [state.value, step.id, step.job_id, step.version, S.EXECUTING.value],
        )
