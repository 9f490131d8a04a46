"""User actions on a whole workflow: cancel and retry. The admin and commands call these."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from django.db import connections, transaction

from baton import broadcast
from baton.exceptions import BatonError, WorkflowExists
from baton.execution import upstream
from baton.execution.announce import announcing
from baton.execution.cascade import enqueue
from baton.execution.deferrer import database_alias
from baton.execution.statements import STEP_COLUMNS, steps_from_rows
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
    with (
        announcing(alias) as ann,
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
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
        cancel_job = upstream.CANCEL_JOB.format(job_id="j.id", abort="j.status = 'doing'")
        cursor.execute(
            f"""
            SELECT {cancel_job}
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
    workflow.refresh_from_db(using=alias)
    logger.info("baton: workflow %s cancelled (%d steps)", workflow.pk, len(cancelled))
    return len(cancelled)


def _retry_selection(cursor: Any, workflow: Workflow, names: list[str]) -> list[int]:
    """The ids of the named failed steps and of the steps they cancelled, transitively."""
    failed = [S.DISCARDED.value, S.CANCELLED.value]
    cursor.execute(
        "SELECT name, id, state FROM baton_step WHERE workflow_id = %s AND name = ANY(%s)",
        [workflow.pk, names],
    )
    found = {name: (step_id, state) for name, step_id, state in cursor.fetchall()}
    problems = [
        f"{name!r} is not a step of this workflow"
        if name not in found
        else f"{name!r} is {found[name][1]}, not discarded or cancelled"
        for name in names
        if name not in found or found[name][1] not in failed
    ]
    if problems:
        raise BatonError("cannot retry: " + "; ".join(problems))
    cursor.execute(
        """
        WITH RECURSIVE below(id) AS (
            SELECT unnest(%(ids)s::bigint[])
             UNION
            SELECT e.downstream_id FROM baton_stepdependency e
              JOIN below b ON e.upstream_id = b.id
              JOIN baton_step d ON d.id = e.downstream_id AND d.state = %(cancelled)s
        )
        SELECT id FROM below
        """,
        {"ids": [step_id for step_id, _ in found.values()], "cancelled": S.CANCELLED.value},
    )
    selected = [row[0] for row in cursor.fetchall()]
    # A step whose failed dependency stays failed would wait for it forever.
    cursor.execute(
        """
        SELECT d.name, u.name, u.state
          FROM baton_stepdependency e
          JOIN baton_step d ON d.id = e.downstream_id
          JOIN baton_step u ON u.id = e.upstream_id
         WHERE e.downstream_id = ANY(%(ids)s) AND NOT (e.upstream_id = ANY(%(ids)s))
           AND u.state <> %(completed)s
         ORDER BY d.id, u.id
        """,
        {"ids": selected, "completed": S.COMPLETED.value},
    )
    blocked = cursor.fetchall()
    if blocked:
        raise BatonError(
            "cannot retry: "
            + "; ".join(
                f"{name!r} depends on {dep!r} ({state}): retry {dep!r} too"
                for name, dep, state in blocked[:10]
            )
        )
    return selected


def retry_workflow(workflow: Workflow, steps: Sequence[str] | None = None) -> int:
    """Re-run discarded and cancelled steps (and what they cancelled), keeping completed
    results. Returns the number of steps reset; the workflow is executing again.

    With `steps` (names), only those steps and the steps they cancelled, transitively;
    a name that is not a discarded or cancelled step of the workflow raises BatonError
    and nothing changes.
    """
    alias = database_alias()
    with (
        announcing(alias) as ann,
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(
            "SELECT state, unique_key FROM baton_workflow WHERE id = %s FOR UPDATE", [workflow.pk]
        )
        row = cursor.fetchone()
        if row is None:
            return 0
        state, unique_key = row
        if unique_key is not None and state != WorkflowState.EXECUTING:
            # Executing again would take the key back; another workflow may hold it now
            # (the partial unique index refuses a race that slips past this check).
            cursor.execute(
                "SELECT id FROM baton_workflow WHERE unique_key = %s AND state = %s",
                [unique_key, WorkflowState.EXECUTING.value],
            )
            holder = cursor.fetchone()
            if holder is not None:
                raise WorkflowExists(unique_key, holder[0])
        only = None if steps is None else _retry_selection(cursor, workflow, list(steps))
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
                     WHERE workflow_id = %(wf)s AND state = ANY(%(failed)s)
                       AND (%(only)s::bigint[] IS NULL OR id = ANY(%(only)s::bigint[]))
                     ORDER BY id FOR UPDATE) old
             WHERE s.id = old.id
         RETURNING {STEP_COLUMNS}, old.old_state
            """,
            {
                "waiting": S.WAITING.value,
                "completed": S.COMPLETED.value,
                "wf": workflow.pk,
                "failed": [S.DISCARDED.value, S.CANCELLED.value],
                "only": only,
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
        # The failures retried no longer count against the workflow; others still do.
        cursor.execute(
            """
            UPDATE baton_workflow
               SET state = %(executing)s, finished_at = NULL, reason = '',
                   failed_steps = (SELECT coalesce(jsonb_agg(f), '[]'::jsonb)
                                     FROM jsonb_array_elements(failed_steps) f
                                    WHERE NOT (f #>> '{}' = ANY(%(names)s))),
                   unfinished_steps = unfinished_steps + %(n)s
             WHERE id = %(wf)s
            """,
            {
                "executing": WorkflowState.EXECUTING.value,
                "names": [step.name for step in reset],
                "n": len(reset),
                "wf": workflow.pk,
            },
        )
        # After the steps' transitions: the workflow is executing again (its finish was
        # announced; this says it un-finished).
        transaction.on_commit(
            functools.partial(broadcast.on_workflow_changed, workflow.pk), using=alias
        )
    workflow.refresh_from_db(using=alias)
    logger.info("baton: workflow %s retried (%d steps)", workflow.pk, len(reset))
    return len(reset)
