"""Growing a running workflow from outside: baton.append(workflow).add(...).insert().

New steps may depend on the workflow's existing steps (completed ones count as done) and
on each other. The insert is validated like a workflow's (unique names, known
dependencies, no cycles, registered steps, JSON args) and is one transaction: on any
error nothing is written.

Concurrency. An existing dependency may complete while the append commits: the append
locks those rows first (so a completion either committed before, and counts as done, or
waits for the append), but a completion statement that began before the append committed
reads the step's edges as they were when it began, and does not see the new ones. So
after its commit the append waits for the statements that began before it to end (their
snapshots, in pg_stat_activity), then counts the new steps' dependencies again, under
their row locks, and releases what is ready: each new step is released once, by
whichever sees its last dependency complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, transaction

from baton import broadcast
from baton.exceptions import BatonError, InvalidWorkflow
from baton.execution.announce import announcing
from baton.execution.cascade import enqueue
from baton.execution.deferrer import database_alias
from baton.execution.insert import step_options, write_steps
from baton.execution.registry import is_registered
from baton.execution.statements import STEP_COLUMNS, steps_from_rows
from baton.graph.builder import WorkflowGraph
from baton.graph.spec import NodeSpec, StepSpec
from baton.graph.states import StepState, WorkflowState
from baton.graph.validate import expand_deps, find_problems
from baton.models import Workflow

S = StepState
_FAILED = (S.DISCARDED.value, S.CANCELLED.value)


class WorkflowAppender(WorkflowGraph):
    """The builder baton.append() returns: add() / add_many() / fan_out(), then insert()."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__(workflow.name, workflow_id=workflow.pk)
        self.workflow = workflow

    def validate(self, is_registered_: Any = None) -> None:
        raise TypeError("append().validate() needs the workflow's steps: call insert()")

    def validated_edges(self, is_registered_: Any = None) -> dict[str, list[str]]:
        raise TypeError("append() is validated against the workflow's steps: call insert()")

    def insert(self) -> Workflow:
        """Validate and write the new steps into the running workflow, atomically."""
        return append_steps(self.workflow, self)

    async def ainsert(self) -> Workflow:
        return await sync_to_async(self.insert)()


def append_steps(workflow: Workflow, graph: WorkflowGraph) -> Workflow:
    alias = database_alias()
    options = step_options(graph.nodes) if graph.nodes else {}
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        existing = existing_steps(cursor, workflow.pk)
        upstream_of = validated_upstream(graph, existing)
        # The existing dependencies first (in id order), then the workflow: the order of
        # every move (steps, then their workflow).
        states = lock_dependencies(cursor, graph, upstream_of, existing)
        cursor.execute("SELECT state FROM baton_workflow WHERE id = %s FOR UPDATE", [workflow.pk])
        row = cursor.fetchone()
        if row is None or row[0] != WorkflowState.EXECUTING:
            state = "gone" if row is None else row[0]
            raise BatonError(
                f"cannot append to workflow {workflow.name} ({workflow.pk}): it is {state}; "
                "only an executing workflow grows"
            )
        pending = pending_counts(graph, upstream_of, states)
        new_ids = write_steps(
            cursor,
            workflow,
            graph.nodes,
            upstream_of,
            options,
            pending=pending,
            existing_ids={name: values[0] for name, values in existing.items()},
        )
        cursor.execute(
            "UPDATE baton_workflow SET step_count = step_count + %(n)s, "
            "unfinished_steps = unfinished_steps + %(n)s WHERE id = %(id)s",
            {"n": len(graph.nodes), "id": workflow.pk},
        )
        cursor.execute("SELECT txid_current()")
        (xid,) = cursor.fetchone()
    waiting_on_existing = waiting_on_unfinished(graph, upstream_of, states, new_ids)
    if waiting_on_existing:
        release_what_is_ready(alias, waiting_on_existing, xid)
    broadcast.on_workflow_inserted(workflow)
    workflow.refresh_from_db(using=alias)
    return workflow


def pending_counts(
    graph: WorkflowGraph, upstream_of: Mapping[str, Sequence[str]], states: Mapping[str, str]
) -> dict[str, int]:
    """Each new step's dependencies still to complete: new ones, and existing ones (their
    locked `states`) that have not completed."""
    return {
        node.name: sum(
            1 for d in upstream_of[node.name] if d not in states or states[d] != S.COMPLETED
        )
        for node in graph.nodes
    }


def waiting_on_unfinished(
    graph: WorkflowGraph,
    upstream_of: Mapping[str, Sequence[str]],
    states: Mapping[str, str],
    new_ids: Mapping[str, int],
) -> list[int]:
    """The new steps that wait for an existing step: the ones a completion that could
    not see their edges may have missed (release_what_is_ready counts them again)."""
    return [
        new_ids[node.name]
        for node in graph.nodes
        if any(d in states and states[d] != S.COMPLETED for d in upstream_of[node.name])
    ]


def existing_steps(cursor: Any, workflow_id: Any) -> dict[str, tuple[Any, ...]]:
    """{name: (id, state, group, group key, task name, grafted by)} of a workflow's
    steps."""
    cursor.execute(
        'SELECT name, id, state, "group", group_key, task_name, grafted_by FROM baton_step '
        "WHERE workflow_id = %s",
        [workflow_id],
    )
    return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}


def lock_dependencies(
    cursor: Any,
    graph: WorkflowGraph,
    upstream_of: Mapping[str, Sequence[str]],
    existing: Mapping[str, Sequence[Any]],
) -> dict[str, str]:
    """Lock the existing steps the new ones depend on; {name: state}. A failed one is
    refused (InvalidWorkflow)."""
    deps = sorted(
        {existing[d][0] for node in graph.nodes for d in upstream_of[node.name] if d in existing}
    )
    cursor.execute(
        "SELECT id, name, state FROM baton_step WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        [deps],
    )
    states = {name: state for _id, name, state in cursor.fetchall()}
    failed = sorted(name for name, state in states.items() if state in _FAILED)
    if failed:
        raise InvalidWorkflow(
            [f"cannot depend on {name!r}: it is {states[name]}" for name in failed]
        )
    return states


def validated_upstream(
    graph: WorkflowGraph, existing: Mapping[str, Sequence[Any]]
) -> dict[str, list[str]]:
    """The new steps' upstream names (existing ones included), or InvalidWorkflow."""
    problems = list(graph._problems)
    if not graph.nodes:
        problems.append("append() needs at least one step")
    existing_groups = {values[2] for values in existing.values() if values[2] is not None}
    for node in graph.nodes:
        if node.group is not None and node.group in existing_groups:
            problems.append(f"group {node.group!r} already exists in the workflow")
    # The existing steps take part as dependency-free nodes: names, groups and known
    # dependencies are checked over both, cycles can only be among the new steps.
    placeholders = [
        NodeSpec(
            name=name,
            spec=StepSpec(task_name=values[4]),
            deps=(),
            group=values[2],
            group_key=values[3],
        )
        for name, values in existing.items()
    ]
    new_tasks = {node.spec.task_name for node in graph.nodes if isinstance(node.spec, StepSpec)}
    problems += find_problems(
        [*placeholders, *graph.nodes],
        lambda task: task not in new_tasks or is_registered(task),
    )
    if problems:
        raise InvalidWorkflow(problems)
    expanded = expand_deps([*placeholders, *graph.nodes])
    return {node.name: expanded[node.name] for node in graph.nodes}


# How long an append waits for statements that began before it committed.
OLDER_SNAPSHOTS_WAIT_SECONDS = 5.0


def wait_for_older_snapshots(alias: str, xid: int) -> None:
    """Wait until no other session of this database runs with a snapshot taken before
    transaction `xid` committed (pg_stat_activity.backend_xmin), as CREATE INDEX
    CONCURRENTLY waits for older transactions: a completion statement that began before
    the append committed has such a snapshot, and is over (committed) once it is gone.
    Bounded: past OLDER_SNAPSHOTS_WAIT_SECONDS (a long transaction elsewhere), the sweep's
    backstop releases what a straggler missed."""
    deadline = time.monotonic() + OLDER_SNAPSHOTS_WAIT_SECONDS
    with connections[alias].cursor() as cursor:
        while True:
            cursor.execute(
                """
                SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_xmin IS NOT NULL
                   AND age(backend_xmin) >= age(%s::text::xid)
                """,
                [str(xid % 2**32)],
            )
            (older,) = cursor.fetchone()
            if not older or time.monotonic() > deadline:
                return
            time.sleep(0.005)


def release_what_is_ready(alias: str, step_ids: Iterable[int], xid: int | None = None) -> None:
    """Count the dependencies of appended steps again and release the ready ones (see
    the module's docstring for the race this closes)."""
    ids = sorted(step_ids)
    if xid is not None:
        wait_for_older_snapshots(alias, xid)
    with (
        announcing(alias) as ann,
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        # Their upstream rows first: a completion still in flight holds one; waiting for
        # it means reading its outcome below.
        cursor.execute(
            "SELECT u.id FROM baton_stepdependency e JOIN baton_step u ON u.id = e.upstream_id "
            "WHERE e.downstream_id = ANY(%s) ORDER BY u.id FOR UPDATE OF u",
            [ids],
        )
        cursor.execute(
            f"""
            UPDATE baton_step s
               SET deps_pending = n.pending
              FROM (SELECT e.downstream_id AS id,
                           count(*) FILTER (WHERE u.state <> %(completed)s) AS pending
                      FROM baton_stepdependency e JOIN baton_step u ON u.id = e.upstream_id
                     WHERE e.downstream_id = ANY(%(ids)s)
                     GROUP BY e.downstream_id) n
             WHERE s.id = n.id AND s.state = %(waiting)s AND s.deps_pending > n.pending
         RETURNING {STEP_COLUMNS}
            """,
            {"ids": ids, "completed": S.COMPLETED.value, "waiting": S.WAITING.value},
        )
        ready = [s for s in steps_from_rows(cursor.fetchall(), alias) if s.deps_pending == 0]
        enqueue(cursor, ready, ann)
