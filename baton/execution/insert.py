"""Inserting a workflow: validation, then every row and the root jobs in one transaction.

Called inside the caller's `transaction.atomic()`, a rollback there removes all of it,
including the root steps' Procrastinate jobs (deferred on Django's connection).
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.db import IntegrityError, connections, transaction

from baton import broadcast, tracing
from baton.exceptions import InvalidWorkflow, WorkflowExists
from baton.execution import upstream
from baton.execution.deferrer import JobRequest, database_alias, defer_jobs
from baton.execution.registry import is_registered, option_problems, registry
from baton.graph.builder import WorkflowGraph
from baton.graph.spec import NodeSpec
from baton.graph.states import StepState, WorkflowState
from baton.models import Workflow

_STEP_COPY_COLUMNS = (
    "id",
    "workflow_id",
    "name",
    "task_name",
    "args",
    "group",
    "group_key",
    "state",
    "queue",
    "priority",
    "lock",
    "max_attempts",
    "ignore_cancelled",
    "ignore_discarded",
    "deps_total",
    "deps_pending",
    "attempt",
    "snoozes",
    "version",
    "job_id",
    "reason",
    "last_error",
    "traceback",
    "grafted_by",
)


# The sequence looked up once per statement (an InitPlan), not once per id drawn: a
# sequence named by text is looked up at every nextval(), 8 µs an id.
_STEP_ID_SEQUENCE = "(SELECT pg_get_serial_sequence('baton_step', 'id')::regclass)"


def _step_options(task_name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    cls = registry[task_name]
    options = {
        "queue": cls.queue,
        "priority": cls.priority,
        "max_attempts": cls.max_attempts,
        "lock": cls.lock,
    }
    unknown = set(overrides) - set(options)
    if unknown:
        raise InvalidWorkflow([f"unknown step option(s) {sorted(unknown)} for {task_name}"])
    options.update(overrides)
    problems = option_problems(options)
    if problems:
        raise InvalidWorkflow([f"step options for {task_name}: {p}" for p in problems])
    return options


def _insert_unless_held(workflow: Workflow, alias: str) -> Workflow | None:
    """Insert the workflow row unless an executing workflow holds its unique key; then
    return that one. The partial unique index decides: a concurrent insert of the same
    key waits for ours to commit or roll back, so two never both win."""
    fields = [f for f in Workflow._meta.concrete_fields if f.attname not in ("created_at",)]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    values = [f.get_db_prep_save(getattr(workflow, f.attname), connections[alias]) for f in fields]
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO baton_workflow ({columns}, created_at)
            VALUES ({", ".join(["%s"] * len(fields))}, now())
            ON CONFLICT (unique_key) WHERE state = %s AND unique_key IS NOT NULL DO NOTHING
            RETURNING created_at
            """,
            [*values, WorkflowState.EXECUTING.value],
        )
        row = cursor.fetchone()
    if row is not None:
        workflow.created_at = row[0]
        workflow._state.adding = False
        workflow._state.db = alias
        return None
    holder = (
        Workflow.objects.using(alias)
        .filter(unique_key=workflow.unique_key, state=WorkflowState.EXECUTING)
        .first()
    )
    if holder is None:  # it finished in between: try once more
        return _insert_unless_held(workflow, alias)
    return holder


@contextlib.contextmanager
def _same_id_refused(workflow_id: uuid.UUID) -> Iterator[None]:
    """insert_graph's exists() check cannot see an insert of the same id that has not
    committed yet; the primary key decides, and the loser gets the same clear error."""
    try:
        yield
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") != (
            "baton_workflow_pkey"
        ):
            raise
        raise InvalidWorkflow([f"a workflow with id {workflow_id} already exists"]) from exc


def write_steps(
    cursor: Any,
    workflow: Workflow,
    nodes: Sequence[NodeSpec],
    upstream_of: Mapping[str, Sequence[str]],
    options: Mapping[str, Mapping[str, Any]],
    *,
    pending: Mapping[str, int],
    existing_ids: Mapping[str, int] | None = None,
    grafted_by: int | None = None,
    jobs_from_rows: bool = False,
) -> dict[str, int]:
    """Write `nodes` as steps of `workflow` with their edges (upstream names may be
    existing steps, in `existing_ids`), and defer the jobs of those with nothing
    `pending`; COPY, so that 100,000 steps take seconds. `grafted_by`: the id of the
    step whose graft they are. `jobs_from_rows`: the jobs are inserted by one statement
    from the written rows, as a completion inserts those of the dependents it releases
    (ten times faster than Procrastinate's defer for thousands of ready steps: what an
    insert and a graft, written inside a step's completion, use). Returns the new
    steps' ids."""
    if jobs_from_rows:
        return _write_steps_and_jobs(
            cursor, workflow, nodes, upstream_of, options, pending, existing_ids, grafted_by
        )
    # Ids first, so that root jobs and edges can name steps before they exist.
    cursor.execute(f"SELECT nextval({_STEP_ID_SEQUENCE}) FROM generate_series(1, %s)", [len(nodes)])
    step_ids = {node.name: row[0] for node, row in zip(nodes, cursor.fetchall(), strict=True)}
    roots = [node for node in nodes if not pending[node.name]]
    job_ids = defer_jobs(
        [
            JobRequest(
                step_id=step_ids[node.name],
                step_name=node.name,
                workflow_id=str(workflow.id),
                task_name=node.spec.task_name,
                queue=options[node.name]["queue"],
                priority=options[node.name]["priority"],
                lock=options[node.name]["lock"],
            )
            for node in roots
        ]
    )
    job_of = {node.name: job_id for node, job_id in zip(roots, job_ids, strict=True)}
    _copy_steps(
        cursor, workflow, nodes, upstream_of, options, pending, grafted_by, step_ids, job_of
    )
    _copy_edges(cursor, workflow, nodes, upstream_of, {**(existing_ids or {}), **step_ids})
    return step_ids


def _write_steps_and_jobs(
    cursor: Any,
    workflow: Workflow,
    nodes: Sequence[NodeSpec],
    upstream_of: Mapping[str, Sequence[str]],
    options: Mapping[str, Mapping[str, Any]],
    pending: Mapping[str, int],
    existing_ids: Mapping[str, int] | None,
    grafted_by: int | None,
) -> dict[str, int]:
    # Step ids, and as many job ids as steps are ready, in one statement: the first
    # rows carry a job id. Both go to the nodes in their order, so that job ids follow
    # step ids. (No array of 100,000 flags to send: a third of the time.)
    ready = [node for node in nodes if not pending[node.name]]
    cursor.execute(
        f"SELECT nextval({_STEP_ID_SEQUENCE}), "
        f"CASE WHEN n <= %s THEN nextval((SELECT {upstream.JOB_ID_SEQUENCE}::regclass)) END "
        "FROM generate_series(1, %s) AS n",
        [len(ready), len(nodes)],
    )
    rows = cursor.fetchall()
    step_ids = {node.name: row[0] for node, row in zip(nodes, rows, strict=True)}
    job_of = {node.name: row[1] for node, row in zip(ready, rows, strict=False)}
    _copy_steps(
        cursor, workflow, nodes, upstream_of, options, pending, grafted_by, step_ids, job_of
    )
    if job_of:
        # The same job rows as the completion's `jobs` (complete.py) and so as
        # defer_jobs (tests/integration/test_release.py, tests/integration/test_graft_budget.py).
        cursor.execute(
            f"""
            {upstream.JOB_INSERT}
            SELECT s.job_id, s.queue, s.task_name, s.priority, s.lock,
                   jsonb_build_object('step_id', s.id, 'workflow_id', s.workflow_id::text,
                                      'step', s.name)
              FROM baton_step s WHERE s.id = ANY(%s::bigint[]) ORDER BY s.id
            """,
            [[step_ids[name] for name in job_of]],
        )
    _copy_edges(cursor, workflow, nodes, upstream_of, {**(existing_ids or {}), **step_ids})
    return step_ids


def _copy_steps(
    cursor: Any,
    workflow: Workflow,
    nodes: Sequence[NodeSpec],
    upstream_of: Mapping[str, Sequence[str]],
    options: Mapping[str, Mapping[str, Any]],
    pending: Mapping[str, int],
    grafted_by: int | None,
    step_ids: Mapping[str, int],
    job_of: Mapping[str, int],
) -> None:
    raw = cursor.cursor  # psycopg's own cursor, for COPY
    columns = ", ".join(f'"{column}"' for column in _STEP_COPY_COLUMNS)
    with raw.copy(f"COPY baton_step ({columns}) FROM STDIN") as copy:
        for node in nodes:
            opts = options[node.name]
            waiting = pending[node.name]
            copy.write_row(
                (
                    step_ids[node.name],
                    workflow.id,
                    node.name,
                    node.spec.task_name,
                    json.dumps(dict(node.spec.args)),
                    node.group,
                    node.group_key,
                    StepState.WAITING if waiting else StepState.AVAILABLE,
                    opts["queue"],
                    opts["priority"],
                    opts["lock"],
                    opts["max_attempts"],
                    workflow.ignore_cancelled
                    if node.ignore_cancelled is None
                    else node.ignore_cancelled,
                    workflow.ignore_discarded
                    if node.ignore_discarded is None
                    else node.ignore_discarded,
                    len(upstream_of[node.name]),
                    waiting,
                    0,  # attempt
                    0,  # snoozes
                    0,  # version
                    job_of.get(node.name),
                    "",
                    "",
                    "",
                    grafted_by,
                )
            )


def _copy_edges(
    cursor: Any,
    workflow: Workflow,
    nodes: Sequence[NodeSpec],
    upstream_of: Mapping[str, Sequence[str]],
    ids: Mapping[str, int],
) -> None:
    # Ids and a UUID only, nothing to escape: written as COPY's text lines, in chunks,
    # which costs a fraction of write_row()'s per-value adaptation.
    prefix = f"{workflow.id}\t"
    with cursor.cursor.copy(
        "COPY baton_stepdependency (workflow_id, upstream_id, downstream_id) FROM STDIN"
    ) as copy:
        lines: list[str] = []
        for node in nodes:
            down = ids[node.name]
            lines.extend(f"{prefix}{ids[dep]}\t{down}\n" for dep in upstream_of[node.name])
            if len(lines) >= 10_000:
                copy.write("".join(lines))
                lines.clear()
        if lines:
            copy.write("".join(lines))


def step_options(nodes: Sequence[NodeSpec]) -> dict[str, dict[str, Any]]:
    """Each node's options, worked out once per task and overrides (100,000 steps are
    usually a handful of classes); the steps alike share one dict, which callers read."""
    options: dict[str, dict[str, Any]] = {}
    known: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = {}
    for node in nodes:
        task_name, overrides = node.spec.task_name, node.spec.options
        try:
            key = (task_name, tuple(sorted(overrides.items())))
            hash(key)
        except TypeError:  # an unhashable override value: worked out (and refused) alone
            options[node.name] = _step_options(task_name, overrides)
            continue
        if key not in known:
            known[key] = _step_options(task_name, overrides)
        options[node.name] = known[key]
    return options


def insert_graph(graph: WorkflowGraph) -> Workflow:
    upstream_of = graph.validated_edges(is_registered)
    options = step_options(graph.nodes)
    alias = database_alias()

    with (
        tracing.insert_span(graph.workflow_name, graph.workflow_id, len(graph.nodes)) as parent,
        transaction.atomic(using=alias),
    ):
        if Workflow.objects.using(alias).filter(pk=graph.workflow_id).exists():
            raise InvalidWorkflow([f"a workflow with id {graph.workflow_id} already exists"])
        workflow = Workflow(
            id=graph.workflow_id,
            name=graph.workflow_name,
            state=WorkflowState.EXECUTING,
            ignore_cancelled=graph.ignore_cancelled,
            ignore_discarded=graph.ignore_discarded,
            debug=graph.debug,
            budget_usd=graph.budget_usd,
            unique_key=graph.unique_key,
            trace_parent=parent,
            step_count=len(graph.nodes),
            unfinished_steps=len(graph.nodes),
        )
        with _same_id_refused(graph.workflow_id):
            if graph.unique_key is None:
                workflow.save(using=alias, force_insert=True)
            else:
                holder = _insert_unless_held(workflow, alias)
                if holder is not None:
                    if graph.on_conflict == "raise":
                        raise WorkflowExists(graph.unique_key, holder.pk)
                    return holder
        with connections[alias].cursor() as cursor:
            write_steps(
                cursor,
                workflow,
                graph.nodes,
                upstream_of,
                options,
                pending={name: len(upstream) for name, upstream in upstream_of.items()},
                # The root jobs by one INSERT from the step rows: for thousands of roots
                # a tenth of the time of Procrastinate's batch defer, the same rows.
                jobs_from_rows=True,
            )
        transaction.on_commit(
            functools.partial(broadcast.on_workflow_inserted, workflow), using=alias
        )
    return workflow
