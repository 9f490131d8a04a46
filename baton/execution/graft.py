"""Grafting: steps a running step adds to its workflow, inserted with its completion.

Inside perform(), `job.graft()` returns a builder (add / add_many / fan_out, no insert).
When the attempt succeeds, what it holds is written in the same transaction as the
step's completion: a crash before the commit adds nothing, a failed attempt's graft is
dropped, and the step completes once, so its graft is added once. The grafting step's
dependents wait for the whole graft: they get an edge from each step of the graft that
nothing else in the graft depends on (its leaves), so they also read the graft's results
(`job.results(group)` for a grafted group). Grafted steps may depend on the grafting step
(they read its result) and on other existing steps, as with baton.append.

Each grafted step records the step that grafted it (Step.grafted_by), which gives a
graft's depth: a graft by a step that was inserted or appended is depth 1, a graft by a
grafted step depth 2, and so on. BATON["GRAFT_MAX_STEPS"] and BATON["GRAFT_MAX_DEPTH"]
bound a graft; one over a limit fails the attempt like an invalid graft.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, transaction

from baton.conf import settings
from baton.exceptions import InvalidWorkflow
from baton.execution.announce import Announcements
from baton.execution.append import (
    existing_steps,
    lock_dependencies,
    pending_counts,
    release_what_is_ready,
    validated_upstream,
    waiting_on_unfinished,
)
from baton.execution.attempt import Claim, Completed
from baton.execution.complete import complete
from baton.execution.deferrer import database_alias
from baton.execution.insert import step_options, write_steps
from baton.graph.builder import WorkflowGraph
from baton.graph.states import StepState

S = StepState


class GraftBuilder(WorkflowGraph):
    """What job.graft() returns: add / add_many / fan_out; inserted when the attempt
    succeeds, never by the step itself."""

    def __init__(self, workflow_name: str, workflow_id: Any) -> None:
        super().__init__(workflow_name, workflow_id=workflow_id)
        # What graft_problems validated against and found: (the workflow's steps as
        # validation reads them, the graft's upstream names). The completion validates
        # again only if the workflow changed in between (an append): validating a
        # 10,000-step graft takes longer than writing it.
        self.checked: tuple[dict[str, tuple[Any, ...]], dict[str, list[str]]] | None = None

    def insert(self) -> Any:
        raise TypeError(
            "a graft is inserted with its step's completion: return from perform() instead"
        )


def graft_depth(step_id: int, existing: Mapping[str, Sequence[Any]]) -> int:
    """The depth of a graft by step `step_id`: 1, plus one per step up its chain of
    grafting steps (`existing` as existing_steps returns it)."""
    grafted_by = {values[0]: values[5] for values in existing.values()}
    depth, current = 1, grafted_by.get(step_id)
    while current is not None and depth <= len(grafted_by):  # a chain, never a cycle
        depth, current = depth + 1, grafted_by.get(current)
    return depth


def graft_problems(claimed: Claim, graft: WorkflowGraph) -> list[str]:
    """What is wrong with a graft against the workflow as it is (one query); checked
    before the attempt's outcome is recorded, so an invalid graft, or one over a limit,
    fails the attempt."""
    max_steps = settings.GRAFT_MAX_STEPS
    if len(graft.nodes) > max_steps:
        return [
            f"it has {len(graft.nodes):,} steps, over BATON['GRAFT_MAX_STEPS'] = "
            f"{max_steps:,}; graft fewer steps per attempt, or raise the setting"
        ]
    with connections[database_alias()].cursor() as cursor:
        existing = existing_steps(cursor, claimed.step.workflow_id)
    max_depth = settings.GRAFT_MAX_DEPTH
    depth = graft_depth(claimed.step.id, existing)
    if depth > max_depth:
        return [
            f"it would be at depth {depth} ({claimed.step.name!r} is itself a grafted "
            f"step at depth {depth - 1}), over BATON['GRAFT_MAX_DEPTH'] = {max_depth}"
        ]
    try:
        upstream_of = validated_upstream(graft, existing)
    except InvalidWorkflow as exc:
        return exc.errors
    if isinstance(graft, GraftBuilder):
        graft.checked = (_what_validation_reads(existing), upstream_of)
    return []


def _what_validation_reads(existing: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """The steps' names, ids, groups, group keys and tasks; not their states."""
    return {name: (v[0], v[2], v[3], v[4]) for name, v in existing.items()}


def complete_with_graft(claimed: Claim, outcome: Completed, ann: Announcements) -> bool:
    """complete(), with the graft written before it in the same transaction."""
    graft: WorkflowGraph = outcome.graft
    alias = ann.alias
    step = claimed.step
    options = step_options(graft.nodes)
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        # The step first (fenced: still this attempt's), as every move locks it.
        cursor.execute(
            "SELECT id FROM baton_step WHERE id = %s AND job_id = %s AND attempt = %s "
            "AND state = %s FOR UPDATE",
            [step.id, claimed.job_id, claimed.attempt, S.EXECUTING.value],
        )
        if cursor.fetchone() is None:
            return False  # superseded: the graft is dropped with the attempt
        existing = existing_steps(cursor, step.workflow_id)
        checked = graft.checked if isinstance(graft, GraftBuilder) else None
        if checked is not None and checked[0] == _what_validation_reads(existing):
            upstream_of = checked[1]
        else:
            upstream_of = validated_upstream(graft, existing)
        states = lock_dependencies(cursor, graft, upstream_of, existing)
        states[step.name] = S.COMPLETED.value  # it completes in this transaction
        pending = pending_counts(graft, upstream_of, states)
        workflow = step.workflow
        new_ids = write_steps(
            cursor,
            workflow,
            graft.nodes,
            upstream_of,
            options,
            pending=pending,
            existing_ids={name: values[0] for name, values in existing.items()},
            grafted_by=step.id,
            jobs_from_rows=True,
        )
        depended_on = {d for upstream in upstream_of.values() for d in upstream}
        leaves = [new_ids[node.name] for node in graft.nodes if node.name not in depended_on]
        # The grafting step's waiting dependents (locked in id order) also wait for the
        # graft's leaves: the completion below then releases none of them.
        cursor.execute(
            """
            WITH dependents AS (
                SELECT d.id FROM baton_stepdependency e JOIN baton_step d ON d.id = e.downstream_id
                 WHERE e.upstream_id = %(step)s AND d.state = %(waiting)s
                 ORDER BY d.id FOR UPDATE OF d
            ), edges AS (
                INSERT INTO baton_stepdependency (workflow_id, upstream_id, downstream_id)
                SELECT %(workflow)s, leaf, d.id
                  FROM dependents d CROSS JOIN unnest(%(leaves)s::bigint[]) AS leaf
            )
            UPDATE baton_step s
               SET deps_total = s.deps_total + %(n)s, deps_pending = s.deps_pending + %(n)s
             WHERE s.id IN (SELECT id FROM dependents)
            """,
            {
                "step": step.id,
                "waiting": S.WAITING.value,
                "workflow": step.workflow_id,
                "leaves": leaves,
                "n": len(leaves),
            },
        )
        cursor.execute(
            "UPDATE baton_workflow SET step_count = step_count + %(n)s, "
            "unfinished_steps = unfinished_steps + %(n)s WHERE id = %(id)s",
            {"n": len(graft.nodes), "id": step.workflow_id},
        )
        applied = complete(claimed, dataclasses.replace(outcome, graft=None), ann)
        cursor.execute("SELECT txid_current()")
        (xid,) = cursor.fetchone()
        if not applied:  # pragma: no cover - the fence above holds the row
            transaction.set_rollback(True, using=alias)
            return False
    waiting_on_existing = waiting_on_unfinished(graft, upstream_of, states, new_ids)
    if waiting_on_existing:
        release_what_is_ready(alias, waiting_on_existing, xid)
    return True
