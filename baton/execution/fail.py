"""The failure moves of an attempt: reschedule (snooze, or a retry after backoff) and
discard. Each is fenced by (step, job, attempt, executing): a superseded attempt
changes nothing.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from baton.execution.announce import Announcements
from baton.execution.attempt import Claim, Discarded, Rescheduled
from baton.execution.cascade import fail_steps, job_request
from baton.execution.deferrer import defer_jobs
from baton.execution.recording import ADD_STEP_COST, store_calls
from baton.execution.statements import STEP_COLUMNS, steps_from_rows
from baton.graph.states import StepState
from baton.llm.ledger import Totals

S = StepState
_FENCE_SQL = (
    "WHERE s.id = %(id)s AND s.job_id = %(job_id)s AND s.attempt = %(attempt)s "
    "AND s.state = %(executing)s"
)


def _fence(claimed: Claim) -> dict[str, Any]:
    return {
        "id": claimed.step.id,
        "job_id": claimed.job_id,
        "attempt": claimed.attempt,
        "executing": S.EXECUTING.value,
    }


def record_failure(claimed: Claim, outcome: Rescheduled | Discarded, ann: Announcements) -> bool:
    """reschedule() or discard() in a transaction of its own. False when superseded."""
    with transaction.atomic(using=ann.alias), connections[ann.alias].cursor() as cursor:
        if isinstance(outcome, Rescheduled):
            return reschedule(cursor, claimed, outcome, ann)
        return discard(cursor, claimed, outcome, ann)


def reschedule(cursor: Any, claimed: Claim, outcome: Rescheduled, ann: Announcements) -> bool:
    """The attempt snoozed (its attempt given back) or failed with attempts left: the
    step is scheduled / retryable, with a fresh job due after the delay."""
    step = claimed.step
    fence = _fence(claimed)
    totals = Totals.of(outcome.calls)
    fence.update(cost=totals.cost_usd, unpriced=totals.unpriced_calls)
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
               {ADD_STEP_COST}
         {_FENCE_SQL}
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
    extra.update(store_calls(cursor, claimed, outcome.calls, totals))
    ann.due.append(at)
    return True


def discard(cursor: Any, claimed: Claim, outcome: Discarded, ann: Announcements) -> bool:
    """The step gives up: discarded, its failure cascaded, the workflow counted down."""
    fence = _fence(claimed)
    totals = Totals.of(outcome.calls)
    fence.update(cost=totals.cost_usd, unpriced=totals.unpriced_calls)
    cursor.execute(
        f"""
        UPDATE baton_step s
           SET version = s.version + 1,
               state = %(discarded)s, finished_at = now(), reason = %(reason)s,
               last_error = CASE WHEN %(error)s = '' THEN s.last_error ELSE %(error)s END,
               traceback = CASE WHEN %(error)s = '' THEN s.traceback ELSE %(tb)s END,
               {ADD_STEP_COST}
         {_FENCE_SQL}
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
    extra.update(store_calls(cursor, claimed, outcome.calls, totals, outcome.workflow_reason))
    return True
