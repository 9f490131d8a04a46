"""The engine: every move a step makes, each in one transaction, by name.

    claim.claim()            the gate: the step becomes executing for this job's attempt
    complete.complete()      the attempt succeeded: result, release, countdown, one statement
    fail.reschedule()        snoozed, or failed with attempts left: a fresh job, later
    fail.discard()           gave up: discarded, failure cascaded, workflow counted down
    cascade.fail_steps()     a failure cancels waiting dependents, transitively
    cascade.enqueue()        steps that became ready get their jobs
    cascade.count_down_workflow()  the move that reaches zero finishes the workflow
    control.cancel_workflow() / retry_workflow()   the user's moves on a whole workflow

finish() records an attempt's outcome, whichever it is; this module also re-exports what
the task wrapper, the sweep and tests use. Every statement runs on Django's connection
(Procrastinate's database alias), so jobs deferred through baton.execution.deferrer commit
or roll back with baton's rows. The statements per move do not depend on the workflow's
size, fan-in or fan-out (the failure cascade adds a few per level it cancels).
"""

from __future__ import annotations

import logging

from baton.execution.announce import Announcements, announcing
from baton.execution.attempt import (
    AttemptOutcome,
    Claim,
    Completed,
    Discarded,
    Rescheduled,
    WorkflowAtClaim,
)
from baton.execution.cascade import enqueue, fail_steps, job_request
from baton.execution.claim import (
    FETCH_AND_CLAIM_SKIPPING_SQL,
    FETCH_AND_CLAIM_SQL,
    claim,
    claim_fetched,
    claimed_by_fetch,
)
from baton.execution.complete import _COMPLETE_SQL, _COMPLETE_WITH_CALLS_SQL, complete
from baton.execution.deferrer import database_alias
from baton.execution.fail import record_failure
from baton.execution.graft import complete_with_graft
from baton.execution.statements import STEP_COLUMNS, steps_from_rows

__all__ = [
    "FETCH_AND_CLAIM_SKIPPING_SQL",
    "FETCH_AND_CLAIM_SQL",
    "STEP_COLUMNS",
    "_COMPLETE_SQL",
    "_COMPLETE_WITH_CALLS_SQL",
    "Announcements",
    "AttemptOutcome",
    "Claim",
    "Completed",
    "Discarded",
    "Rescheduled",
    "WorkflowAtClaim",
    "announcing",
    "claim",
    "claim_fetched",
    "claimed_by_fetch",
    "enqueue",
    "fail_steps",
    "finish",
    "job_request",
    "steps_from_rows",
]

logger = logging.getLogger("baton")


def finish(claimed: Claim, outcome: AttemptOutcome) -> bool:
    """Record an attempt's outcome. False when the attempt was superseded (no change)."""
    with announcing(database_alias()) as announcements:
        if isinstance(outcome, Completed) and outcome.graft is not None:
            applied = complete_with_graft(claimed, outcome, announcements)
        elif isinstance(outcome, Completed):
            applied = complete(claimed, outcome, announcements)
        else:
            applied = record_failure(claimed, outcome, announcements)
    if not applied:
        logger.warning(
            "baton: attempt %s of step %s (job %s) was superseded; its outcome is dropped",
            claimed.attempt,
            claimed.step.name,
            claimed.job_id,
        )
    return applied
