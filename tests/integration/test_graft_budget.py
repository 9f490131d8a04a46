"""The statements a grafting step's completion costs do not grow with the graft's size.

Measured in-process, as tests/integration/test_query_budget.py does: the test claims a step, builds
its graft as perform() would (job.graft() is a GraftBuilder), then runs what the task
wrapper runs after perform() returns, the graft's check (graft_problems) and the
completion (advance.finish), counting the statements Django's connection executes
(CaptureQueriesContext) and the COPY streams baton writes steps and edges with (on the
same connection, through psycopg's cursor, which Django's log does not see). The
measured numbers are printed (`pytest -s`) and stated in docs/howto/dynamic.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import baton
from baton.execution import advance
from baton.execution.graft import GraftBuilder, graft_problems
from baton.models import StepDependency, Workflow, WorkflowStep
from tests.testapp.tasks import Configured, Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")

SIZES = (1, 10, 100, 1_000)
# The graft's check: one statement (the workflow's steps, for names, deps and depth).
CHECK = 1
# The completion with its graft: BEGIN, lock the step, read the workflow's steps, lock
# the existing dependencies, load the workflow (the new steps' ignore flags), take the
# new ids, insert the ready steps' jobs (one statement), make the grafting step's
# dependents wait for the graft, count the steps into the workflow, the completion
# itself, read the transaction id, COMMIT; plus the two COPYs (steps, edges). Whatever
# the graft's size.
FINISH = 12
COPIES = 2


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The COPY statements run while the test runs (psycopg's Cursor.copy, counted and
    passed through)."""
    seen: list[str] = []
    original = psycopg.Cursor.copy

    def counted(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(statement))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", counted)
    yield seen


def grafting_workflow(size: int) -> Workflow:
    workflow: Workflow = (
        baton.new(f"graft-{size}")
        .add("g", Echo.new())
        .add("after", Echo.new(), deps=["g"])
        .insert()
    )
    return workflow


def measure(size: int, copies: list[str]) -> tuple[int, int, int]:
    """(statements of the check, of the completion, COPYs) for a graft of `size` steps."""
    workflow = grafting_workflow(size)
    row = WorkflowStep.objects.get(workflow=workflow, name="g")
    assert row.job_id is not None
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    graft = GraftBuilder("graft of g", workflow.pk)
    graft.add_many("parts", [Echo.new(value=i) for i in range(size)], deps=["g"])
    text = json.dumps({"parts": size})
    outcome = advance.Completed(value_json=text, size_bytes=len(text), graft=graft)
    copies.clear()
    with CaptureQueriesContext(connection) as check_queries:
        assert graft_problems(claimed, graft) == []
    with CaptureQueriesContext(connection) as finish_queries:
        assert advance.finish(claimed, outcome)
    for query in [*check_queries, *finish_queries]:  # shown by pytest when a test fails
        print(f"    {' '.join(query['sql'].split())[:120]}")
    # What the completion wrote: the graft, its jobs, and `after` waiting for all of it.
    parts = WorkflowStep.objects.filter(workflow=workflow, group="parts")
    assert parts.count() == size
    assert set(parts.values_list("state", flat=True)) == {"available"}
    assert parts.filter(job_id__isnull=True, grafted_by=row.id).count() == 0
    after = WorkflowStep.objects.get(workflow=workflow, name="after")
    assert (after.state, after.deps_total, after.deps_pending) == ("waiting", 1 + size, size)
    assert StepDependency.objects.filter(workflow=workflow).count() == 1 + 2 * size
    return len(check_queries), len(finish_queries), len(copies)


def test_a_grafting_completion_costs_the_same_statements_for_1_or_1000_steps(
    copies: list[str],
) -> None:
    measured = {size: measure(size, copies) for size in SIZES}
    for size, (check, finish, copied) in measured.items():
        print(
            f"\n[query budget] graft of {size:,} step(s): check {check} + completion "
            f"{finish} statements + {copied} COPY"
        )
    assert len(set(measured.values())) == 1, measured
    assert measured[1] == (CHECK, FINISH, COPIES)


def job_row(job_id: int | None) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT queue_name, task_name, priority, lock, queueing_lock, args, status, "
            "scheduled_at FROM procrastinate_jobs WHERE id = %s",
            [job_id],
        )
        columns = [column[0] for column in cursor.description]
        row = dict(zip(columns, cursor.fetchone(), strict=True))
    if isinstance(row["args"], str):
        row["args"] = json.loads(row["args"])
    return row


def test_a_grafted_step_s_job_looks_like_an_inserted_step_s() -> None:
    """The graft inserts its ready steps' jobs by a statement of its own (not through
    Procrastinate's defer, as insert() does): workers cannot tell them apart."""
    workflow = baton.new("jobs").add("g", Echo.new()).add("twin", Configured.new()).insert()
    row = WorkflowStep.objects.get(workflow=workflow, name="g")
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    graft = GraftBuilder("graft of g", workflow.pk)
    graft.add("grafted", Configured.new(), deps=["g"])
    assert graft_problems(claimed, graft) == []
    assert advance.finish(claimed, advance.Completed(value_json=None, graft=graft))
    twin, grafted = (
        WorkflowStep.objects.get(workflow=workflow, name=n) for n in ("twin", "grafted")
    )
    inserted_job, grafted_job = job_row(twin.job_id), job_row(grafted.job_id)
    for job, step in ((inserted_job, twin), (grafted_job, grafted)):
        assert job["args"] == {
            "step_id": step.id,
            "workflow_id": str(workflow.pk),
            "step": step.name,
        }
    del inserted_job["args"], grafted_job["args"]
    assert grafted_job == inserted_job  # queue, task, priority, lock, status, schedule
