"""What a step's end does to the rest of its workflow.

enqueue():             defer jobs for steps that became ready and make them available;
fail_steps():          a discarded or cancelled step cancels its waiting dependents
                       (transitively) unless they ignore that kind of failure;
count_down_workflow(): count terminal steps down; the move that reaches zero finishes
                       the workflow (completed, or failed when a failure was not absorbed).
The completion does its own release and countdown inside its statement (complete.py).
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from baton.execution.announce import Announcements
from baton.execution.deferrer import JobRequest, defer_jobs
from baton.execution.statements import STEP_COLUMNS, steps_from_rows
from baton.graph.states import StepState, WorkflowState
from baton.models import WorkflowStep

S = StepState


def job_request(step: WorkflowStep, at: datetime.datetime | None = None) -> JobRequest:
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


def enqueue(cursor: Any, steps: Sequence[WorkflowStep], ann: Announcements) -> None:
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
    failed: Sequence[WorkflowStep],
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
        count_down_workflow(cursor, workflow_id, terminal=count, failed_names=names, ann=ann)


# ------------------------------------------------------------------- finishing workflows
def count_down_workflow(
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
        maybe_finish_workflow(cursor, workflow_id, unfinished, state, failed, ann)


def maybe_finish_workflow(
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
