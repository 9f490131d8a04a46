"""User actions on a whole workflow: cancel and retry. The admin and commands call these."""

from __future__ import annotations

import logging

from django.db import connections, transaction

from baton.execution.advance import STEP_COLUMNS, Announcements, enqueue, steps_from_rows
from baton.execution.deferrer import database_alias
from baton.graph.states import StepState, WorkflowState
from baton.models import Workflow

logger = logging.getLogger("baton")
S = StepState
# Every state that is not terminal: a finished workflow holds none of them.
_UNFINISHED = [
    S.WAITING.value,
    S.AVAILABLE.value,
    S.SCHEDULED.value,
    S.RETRYABLE.value,
    S.EXECUTING.value,
]


def cancel_workflow(workflow: Workflow, reason: str = "workflow cancelled") -> int:
    """Cancel every unfinished step, executing ones included, ask running jobs to abort,
    and mark the workflow cancelled, in one transaction.

    An executing step's attempt is fenced by the cancellation: whatever its perform()
    returns later fails the fence (the step is no longer executing), so it stores,
    records and releases nothing. Returns the number of steps cancelled; 0 when the
    workflow had already finished.
    """
    alias = database_alias()
    ann = Announcements(alias)
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SELECT state FROM baton_workflow WHERE id = %s FOR UPDATE", [workflow.pk])
        row = cursor.fetchone()
        if row is None or row[0] != WorkflowState.EXECUTING:
            return 0
        cursor.execute(
            f"""
            UPDATE baton_step s SET version = s.version + 1,
                                    state = %(cancelled)s, reason = %(reason)s,
                   finished_at = now()
              FROM (SELECT id, state AS old_state FROM baton_step
                     WHERE workflow_id = %(wf)s AND state = ANY(%(unfinished)s)
                       FOR UPDATE) old
             WHERE s.id = old.id
         RETURNING {STEP_COLUMNS}, old.old_state
            """,
            {
                "cancelled": S.CANCELLED.value,
                "reason": reason,
                "wf": workflow.pk,
                "unfinished": _UNFINISHED,
            },
        )
        rows = cursor.fetchall()
        cancelled = steps_from_rows(rows, alias)
        for step, row in zip(cancelled, rows, strict=True):
            ann.step(step, row[-1])
        # Queued jobs are cancelled; running ones are asked to abort (async steps are
        # interrupted, sync steps see job.should_abort()). The fence stops stragglers.
        cursor.execute(
            """
            SELECT procrastinate_cancel_job_v1(j.id, j.status = 'doing', false)
              FROM baton_step s JOIN procrastinate_jobs j ON j.id = s.job_id
             WHERE s.workflow_id = %(wf)s AND j.status IN ('todo', 'doing')
            """,
            {"wf": workflow.pk},
        )
        cursor.execute(
            """
            UPDATE baton_workflow
               SET state = %s, finished_at = now(), unfinished_steps = unfinished_steps - %s
             WHERE id = %s
            """,
            [WorkflowState.CANCELLED.value, len(cancelled), workflow.pk],
        )
        ann.finished_workflows.append((workflow.pk, WorkflowState.CANCELLED.value))
        ann.register()
    workflow.refresh_from_db(using=alias)
    logger.info("baton: workflow %s cancelled (%d steps)", workflow.pk, len(cancelled))
    return len(cancelled)


def retry_workflow(workflow: Workflow) -> int:
    """Re-run discarded and cancelled steps (and what they cancelled), keeping completed
    results. Returns the number of steps reset; the workflow is executing again."""
    alias = database_alias()
    ann = Announcements(alias)
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SELECT state FROM baton_workflow WHERE id = %s FOR UPDATE", [workflow.pk])
        if cursor.fetchone() is None:
            return 0
        # deps_pending counts every dependency that is not completed: the ones being
        # retried here are discarded or cancelled in this statement's snapshot.
        cursor.execute(
            f"""
            UPDATE baton_step s
               SET version = s.version + 1,
                   state = %(waiting)s, attempt = 0, reason = '', job_id = NULL,
                   started_at = NULL, finished_at = NULL, scheduled_at = NULL,
                   deps_pending = (
                       SELECT count(*) FROM baton_stepdependency e
                         JOIN baton_step u ON u.id = e.upstream_id
                        WHERE e.downstream_id = s.id AND u.state <> %(completed)s)
              FROM (SELECT id, state AS old_state FROM baton_step
                     WHERE workflow_id = %(wf)s AND state = ANY(%(failed)s) FOR UPDATE) old
             WHERE s.id = old.id
         RETURNING {STEP_COLUMNS}, old.old_state
            """,
            {
                "waiting": S.WAITING.value,
                "completed": S.COMPLETED.value,
                "wf": workflow.pk,
                "failed": [S.DISCARDED.value, S.CANCELLED.value],
            },
        )
        rows = cursor.fetchall()
        reset = steps_from_rows(rows, alias)
        if not reset:
            return 0
        cursor.execute(
            "DELETE FROM baton_stepresult WHERE step_id = ANY(%s)", [[s.id for s in reset]]
        )
        ready = [step for step in reset if step.deps_pending == 0]
        # Every reset step is announced discarded/cancelled -> waiting; enqueue then
        # announces waiting -> available for the ready ones.
        for step, row in zip(reset, rows, strict=True):
            ann.step(step, row[-1])
        enqueue(cursor, ready, ann)
        cursor.execute(
            """
            UPDATE baton_workflow
               SET state = %s, finished_at = NULL, failed_steps = '[]'::jsonb, reason = '',
                   unfinished_steps = unfinished_steps + %s
             WHERE id = %s
            """,
            [WorkflowState.EXECUTING.value, len(reset), workflow.pk],
        )
        ann.register()
    workflow.refresh_from_db(using=alias)
    logger.info("baton: workflow %s retried (%d steps)", workflow.pk, len(reset))
    return len(reset)
