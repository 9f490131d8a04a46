"""insert() / ainsert(): every row and the root jobs in one transaction, or nothing.

Real PostgreSQL, no worker: these tests look at the rows insert() leaves behind (or does
not), including Procrastinate's own procrastinate_jobs table.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction

import baton
import baton.execution.insert as insert_module
from baton.execution.deferrer import JobRequest, defer_jobs
from baton.graph.spec import StepSpec
from baton.models import StepDependency, Workflow, WorkflowStep
from tests.testapp.tasks import Collect, Configured, Echo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_jobs")]


class Boom(Exception):
    """Raised by a test to abort a transaction."""


def job_rows() -> dict[Any, dict[str, Any]]:
    """Procrastinate's job rows, by id, as seen on Django's connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status, task_name, queue_name, priority, lock, args "
            "FROM procrastinate_jobs ORDER BY id"
        )
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:  # Django's connection leaves jsonb as text
        row["args"] = json.loads(row["args"]) if isinstance(row["args"], str) else row["args"]
    return {row["id"]: row for row in rows}


def row_counts() -> dict[str, int]:
    return {
        "workflows": Workflow.objects.count(),
        "steps": WorkflowStep.objects.count(),
        "edges": StepDependency.objects.count(),
        "jobs": len(job_rows()),
    }


NOTHING = {"workflows": 0, "steps": 0, "edges": 0, "jobs": 0}


def edge_names(workflow: Workflow) -> set[tuple[str, str]]:
    return set(
        StepDependency.objects.filter(workflow=workflow).values_list(
            "upstream__name", "downstream__name"
        )
    )


def other_connection_job_count() -> int:
    """procrastinate_jobs rows visible to a second connection: only committed ones."""
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        autocommit=True,
    ) as other:
        row = other.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
        assert row is not None
        return int(row[0])


def diamond() -> Any:
    """Two roots, a fan-out group behind one of them, a join on the group, a tail."""
    return (
        baton.new("diamond")
        .add("a", Echo.new(value=1))
        .add("b", Echo.new(value={"nested": [1, 2]}))
        .add_many("fan", {"x": Echo.new(), "y": Echo.new(), "z": Echo.new()}, deps="a")
        .add("join", Collect.new(group="fan"), deps=["fan", "b"])
        .add("tail", Collect.new(), deps="join")
    )


# ------------------------------------------------------------------------ what is written
def test_insert_writes_workflow_steps_edges_and_root_jobs() -> None:
    workflow = diamond().insert()

    workflow.refresh_from_db()
    assert workflow.name == "diamond"
    assert workflow.state == "executing"
    assert workflow.step_count == 7
    assert workflow.unfinished_steps == 7
    assert workflow.failed_steps == []

    steps = {step.name: step for step in WorkflowStep.objects.filter(workflow=workflow)}
    assert set(steps) == {"a", "b", "fan[x]", "fan[y]", "fan[z]", "join", "tail"}
    assert steps["b"].args == {"value": {"nested": [1, 2]}}
    assert steps["join"].args == {"group": "fan"}
    assert (steps["fan[y]"].group, steps["fan[y]"].group_key) == ("fan", "y")
    assert (steps["a"].group, steps["a"].group_key) == (None, None)
    assert steps["join"].task_name == Collect.task_name
    for step in steps.values():
        assert (step.attempt, step.snoozes) == (0, 0)
        assert (step.reason, step.last_error, step.traceback) == ("", "", "")

    jobs = job_rows()
    assert len(jobs) == 2  # the roots' jobs, and no others
    for name in ("a", "b"):
        root = steps[name]
        assert root.state == "available"
        assert (root.deps_total, root.deps_pending) == (0, 0)
        job = jobs[root.job_id]
        assert job["status"] == "todo"
        assert job["task_name"] == Echo.task_name
        assert job["queue_name"] == "default"
        assert job["args"]["step_id"] == root.id
        assert job["args"]["workflow_id"] == str(workflow.id)

    expected_deps = {"fan[x]": 1, "fan[y]": 1, "fan[z]": 1, "join": 4, "tail": 1}
    for name, deps in expected_deps.items():
        step = steps[name]
        assert step.state == "waiting", name
        assert step.job_id is None, name
        assert (step.deps_total, step.deps_pending) == (deps, deps), name

    assert edge_names(workflow) == {
        ("a", "fan[x]"),
        ("a", "fan[y]"),
        ("a", "fan[z]"),
        ("fan[x]", "join"),
        ("fan[y]", "join"),
        ("fan[z]", "join"),
        ("b", "join"),
        ("join", "tail"),
    }


def test_given_workflow_id_and_workflow_options_are_kept() -> None:
    workflow_id = uuid.uuid4()
    workflow = (
        baton.new("given", workflow_id=workflow_id, debug=True, budget_usd="1.25")
        .add("only", Echo.new())
        .insert()
    )
    stored = Workflow.objects.get()
    assert workflow.id == stored.id == workflow_id
    assert stored.debug is True
    assert str(stored.budget_usd) == "1.250000"


def test_step_options_come_from_the_step_class() -> None:
    workflow = (
        baton.new("options")
        .add("configured", Configured.new())
        .add("plain", Echo.new())
        .add("after", Configured.new(), deps="configured")
        .insert()
    )
    steps = {step.name: step for step in WorkflowStep.objects.filter(workflow=workflow)}
    for name in ("configured", "after"):
        step = steps[name]
        assert (step.queue, step.priority, step.max_attempts, step.lock) == (
            "insert-options",
            7,
            4,
            "insert-options-lock",
        )
    plain = steps["plain"]
    assert (plain.queue, plain.priority, plain.max_attempts, plain.lock) == (
        "default",
        0,
        1,  # Echo.max_attempts
        None,
    )

    jobs = job_rows()
    root_job = jobs[steps["configured"].job_id]
    assert (root_job["queue_name"], root_job["priority"], root_job["lock"]) == (
        "insert-options",
        7,
        "insert-options-lock",
    )
    plain_job = jobs[plain.job_id]
    assert (plain_job["queue_name"], plain_job["priority"], plain_job["lock"]) == (
        "default",
        0,
        None,
    )


def test_per_step_option_overrides_beat_the_class() -> None:
    spec = dataclasses.replace(Configured.new(), options={"priority": 2, "queue": "other"})
    workflow = baton.new("overrides").add("s", spec).insert()
    step = WorkflowStep.objects.get(workflow=workflow)
    assert (step.queue, step.priority, step.max_attempts) == ("other", 2, 4)
    job = job_rows()[step.job_id]
    assert (job["queue_name"], job["priority"]) == ("other", 2)


def test_unknown_step_option_is_invalid_and_inserts_nothing() -> None:
    spec = dataclasses.replace(Echo.new(), options={"colour": "red"})
    builder = baton.new("bad option").add("ok", Echo.new()).add("s", spec, deps="ok")
    with pytest.raises(baton.InvalidWorkflow) as caught:
        builder.insert()
    assert any("colour" in error for error in caught.value.errors)
    assert row_counts() == NOTHING


@pytest.mark.parametrize(
    ("workflow_default", "expected"),
    [
        # (ignore_cancelled, ignore_discarded) of the workflow -> of each step
        (
            (False, False),
            {
                "inherits": (False, False),
                "cancelled_on": (True, False),
                "discarded_on": (False, True),
                "both_off": (False, False),
            },
        ),
        (
            (True, True),
            {
                "inherits": (True, True),
                "cancelled_on": (True, True),
                "discarded_on": (True, True),
                "both_off": (False, False),
            },
        ),
    ],
)
def test_ignore_flags_default_to_the_workflow_and_steps_override(
    workflow_default: tuple[bool, bool], expected: dict[str, tuple[bool, bool]]
) -> None:
    ignore_cancelled, ignore_discarded = workflow_default
    workflow = (
        baton.new("flags", ignore_cancelled=ignore_cancelled, ignore_discarded=ignore_discarded)
        .add("inherits", Echo.new())
        .add("cancelled_on", Echo.new(), ignore_cancelled=True)
        .add("discarded_on", Echo.new(), ignore_discarded=True)
        .add("both_off", Echo.new(), ignore_cancelled=False, ignore_discarded=False)
        .insert()
    )
    stored = Workflow.objects.get(pk=workflow.pk)
    assert (stored.ignore_cancelled, stored.ignore_discarded) == workflow_default
    flags = {
        step.name: (step.ignore_cancelled, step.ignore_discarded)
        for step in WorkflowStep.objects.filter(workflow=workflow)
    }
    assert flags == expected


# --------------------------------------------------------------------------- validation
def invalid_builder() -> Any:
    return (
        baton.new("broken")
        .add("fine", Echo.new())
        .add("x", Echo.new(), deps="y")
        .add("y", Echo.new(), deps=["x", "fine"])
        .add("orphan", Echo.new(), deps=["nowhere"])
        .add("ghost", StepSpec(task_name="tests.testapp.tasks.DoesNotExist"))
        .add("opaque", Echo.new(when=object()))
    )


def assert_every_problem_listed(errors: list[str]) -> None:
    assert len(errors) == 4, errors
    cycle = [error for error in errors if error.startswith("dependency cycle")]
    assert len(cycle) == 1, errors
    assert "x" in cycle[0] and "y" in cycle[0] and "fine" not in cycle[0]
    assert any("'orphan'" in error and "'nowhere'" in error for error in errors), errors
    assert any(
        "'ghost'" in error and "DoesNotExist" in error and "not registered" in error
        for error in errors
    ), errors
    assert any("'opaque'" in error and "JSON" in error for error in errors), errors


def test_invalid_workflow_lists_every_problem_and_inserts_nothing() -> None:
    with pytest.raises(baton.InvalidWorkflow) as caught:
        invalid_builder().insert()
    assert_every_problem_listed(caught.value.errors)
    for error in caught.value.errors:
        assert error in str(caught.value)
    assert row_counts() == NOTHING


def test_validate_raises_the_same_problems_without_inserting() -> None:
    with pytest.raises(baton.InvalidWorkflow) as caught:
        invalid_builder().validate()
    assert_every_problem_listed(caught.value.errors)
    assert row_counts() == NOTHING


def test_validate_of_a_valid_workflow_returns_none_and_inserts_nothing() -> None:
    assert diamond().validate() is None
    assert row_counts() == NOTHING


def test_invalid_workflow_inside_outer_atomic_leaves_the_transaction_usable() -> None:
    with transaction.atomic():
        kept = baton.new("kept").add("a", Echo.new()).insert()
        with pytest.raises(baton.InvalidWorkflow):
            invalid_builder().insert()
    assert list(Workflow.objects.values_list("id", flat=True)) == [kept.id]
    assert row_counts() == {"workflows": 1, "steps": 1, "edges": 0, "jobs": 1}


# ------------------------------------------------------------------- all or nothing
def test_outer_atomic_rollback_removes_workflow_steps_edges_and_root_jobs() -> None:
    with pytest.raises(Boom), transaction.atomic():
        diamond().insert()
        # Written, including Procrastinate's jobs, but only inside this transaction.
        assert row_counts() == {"workflows": 1, "steps": 7, "edges": 8, "jobs": 2}
        assert other_connection_job_count() == 0
        raise Boom
    assert row_counts() == NOTHING
    assert other_connection_job_count() == 0


def test_outer_atomic_commit_keeps_everything() -> None:
    with transaction.atomic():
        diamond().insert()
        assert other_connection_job_count() == 0
    assert row_counts() == {"workflows": 1, "steps": 7, "edges": 8, "jobs": 2}
    assert other_connection_job_count() == 2


def test_existing_workflow_id_is_invalid_and_writes_nothing_more() -> None:
    workflow_id = uuid.uuid4()
    first = baton.new("first", workflow_id=workflow_id).add("a", Echo.new()).insert()
    before = row_counts()

    second = (
        baton.new("second", workflow_id=str(workflow_id))
        .add("b", Echo.new())
        .add("c", Echo.new(), deps="b")
    )
    with pytest.raises(baton.InvalidWorkflow) as caught:
        second.insert()
    assert caught.value.errors == [f"a workflow with id {workflow_id} already exists"]
    assert row_counts() == before
    assert Workflow.objects.get().name == "first"
    assert list(WorkflowStep.objects.values_list("name", flat=True)) == ["a"]
    assert list(job_rows()) == [WorkflowStep.objects.get(workflow=first).job_id]


@pytest.fixture
def boom_constraint() -> Iterator[None]:
    """A CHECK constraint that rejects a step named "boom": a real database error raised
    by the COPY of steps, after the workflow row and the roots' jobs were written."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE baton_step ADD CONSTRAINT test_no_boom CHECK (name <> 'boom')")
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE baton_step DROP CONSTRAINT test_no_boom")


def test_long_queue_is_rejected_before_anything_is_written() -> None:
    spec = dataclasses.replace(Echo.new(), options={"queue": "q" * 41})
    with pytest.raises(baton.InvalidWorkflow, match="at most 40 bytes"):
        baton.new("q").add("root", Echo.new()).add("after", spec, deps="root").insert()
    assert row_counts() == NOTHING


def test_database_error_after_jobs_were_deferred_writes_nothing(boom_constraint: None) -> None:
    builder = (
        baton.new("too long")
        .add("root", Echo.new())
        .add("other_root", Echo.new())
        .add("boom", Echo.new(), deps=["root", "other_root"])
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        builder.insert()
    assert row_counts() == NOTHING
    assert other_connection_job_count() == 0


def test_database_error_part_way_inside_outer_atomic_rolls_back_only_the_insert(
    boom_constraint: None,
) -> None:
    builder = baton.new("too long").add("root", Echo.new()).add("boom", Echo.new(), deps="root")
    with transaction.atomic():
        kept = baton.new("kept").add("a", Echo.new()).add("b", Echo.new(), deps="a").insert()
        with pytest.raises(psycopg.errors.CheckViolation):
            builder.insert()
        # The failed insert's savepoint is gone; the caller's transaction goes on.
        assert Workflow.objects.filter(name="kept").exists()
    assert list(Workflow.objects.values_list("id", flat=True)) == [kept.id]
    assert row_counts() == {"workflows": 1, "steps": 2, "edges": 1, "jobs": 1}


def test_failure_right_after_the_root_jobs_were_written_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The root jobs are inserted from the step rows, before the edges are copied.
    written: list[int] = []
    copy_edges = insert_module._copy_edges

    def fail_after_the_jobs(*args: Any, **kwargs: Any) -> None:
        copy_edges(*args, **kwargs)
        # The jobs really are there, in the insert's transaction.
        written.extend(job_rows())
        raise Boom

    monkeypatch.setattr(insert_module, "_copy_edges", fail_after_the_jobs)
    with pytest.raises(Boom):
        diamond().insert()
    assert len(written) == 2
    assert row_counts() == NOTHING


def test_too_long_workflow_name_writes_nothing() -> None:
    with pytest.raises(baton.InvalidWorkflow, match="at most 200"):
        baton.new("w" * 201).add("a", Echo.new()).insert()
    assert row_counts() == NOTHING


# ------------------------------------------------------- Procrastinate's Django connector
def request(step_id: int = 1) -> JobRequest:
    return JobRequest(
        step_id=step_id,
        step_name="probe",
        workflow_id=str(uuid.uuid4()),
        task_name=Echo.task_name,
        queue="default",
    )


def test_defer_jobs_joins_the_orm_transaction_rollback() -> None:
    with pytest.raises(Boom), transaction.atomic():
        (job_id,) = defer_jobs([request(41)])
        assert job_rows()[job_id]["args"]["step_id"] == 41  # visible inside the transaction
        assert other_connection_job_count() == 0  # and not outside it: not committed
        raise Boom
    assert job_rows() == {}
    assert other_connection_job_count() == 0


def test_defer_jobs_joins_the_orm_transaction_commit() -> None:
    with transaction.atomic():
        job_ids = defer_jobs([request(1), request(2), request(3)])
        assert other_connection_job_count() == 0
    assert len(set(job_ids)) == 3
    jobs = job_rows()
    assert sorted(jobs) == sorted(job_ids)
    assert [jobs[job_id]["args"]["step_id"] for job_id in job_ids] == [1, 2, 3]
    assert {job["status"] for job in jobs.values()} == {"todo"}
    assert other_connection_job_count() == 3


def test_defer_jobs_rolls_back_with_a_savepoint() -> None:
    with transaction.atomic():
        (kept,) = defer_jobs([request(1)])
        with pytest.raises(Boom), transaction.atomic():
            defer_jobs([request(2)])
            raise Boom
    assert list(job_rows()) == [kept]


def test_defer_jobs_with_nothing_to_defer_writes_nothing() -> None:
    assert defer_jobs([]) == []
    assert job_rows() == {}


# ---------------------------------------------------------------------------- at scale
def test_ten_thousand_step_workflow() -> None:
    # 100 independent lanes: a root, a fan-out of 98 behind it, a join on the fan-out.
    lanes, width = 100, 98
    builder = baton.new("big")
    for lane in range(lanes):
        builder.add(f"root{lane}", Echo.new(lane=lane))
        builder.add_many(
            f"fan{lane}", [Echo.new(lane=lane, i=i) for i in range(width)], deps=f"root{lane}"
        )
        builder.add(f"join{lane}", Collect.new(group=f"fan{lane}"), deps=f"fan{lane}")
    assert len(builder) == 10_000

    workflow = builder.insert()

    steps = WorkflowStep.objects.filter(workflow=workflow)
    assert steps.count() == 10_000
    assert StepDependency.objects.filter(workflow=workflow).count() == lanes * width * 2
    assert steps.filter(state="available").count() == lanes
    assert steps.filter(state="waiting").count() == 10_000 - lanes
    assert steps.filter(name__startswith="join", deps_total=width, deps_pending=width).count() == (
        lanes
    )
    assert steps.filter(name__startswith="fan", deps_total=1, deps_pending=1).count() == (
        lanes * width
    )
    roots = dict(steps.filter(state="available").values_list("job_id", "id"))
    jobs = job_rows()
    assert set(jobs) == set(roots)
    assert all(jobs[job_id]["args"]["step_id"] == roots[job_id] for job_id in jobs)
    workflow.refresh_from_db()
    assert (workflow.step_count, workflow.unfinished_steps) == (10_000, 10_000)
    # Spot check an edge of the last lane, through the group.
    assert ("fan99[97]", "join99") in edge_names(workflow)


# ------------------------------------------------------------------------------- async
def test_ainsert_from_async_code() -> None:
    builder = diamond()

    async def main() -> Workflow:
        workflow: Workflow = await builder.ainsert()
        return workflow

    workflow = async_to_sync(main)()
    assert isinstance(workflow, Workflow)
    assert row_counts() == {"workflows": 1, "steps": 7, "edges": 8, "jobs": 2}
    assert Workflow.objects.get().id == workflow.id


def test_ainsert_of_an_invalid_workflow_raises_and_inserts_nothing() -> None:
    async def main() -> None:
        await invalid_builder().ainsert()

    with pytest.raises(baton.InvalidWorkflow) as caught:
        async_to_sync(main)()
    assert_every_problem_listed(caught.value.errors)
    assert row_counts() == NOTHING


def test_ainsert_joins_a_surrounding_sync_transaction() -> None:
    async def main() -> Workflow:
        workflow: Workflow = await diamond().ainsert()
        return workflow

    with pytest.raises(Boom), transaction.atomic():
        async_to_sync(main)()
        assert row_counts()["workflows"] == 1
        raise Boom
    assert row_counts() == NOTHING


def test_job_args_are_json() -> None:
    # The job's args column holds exactly what the task wrapper needs, as JSON.
    workflow = baton.new("args").add("only", Echo.new(value=3)).insert()
    step = WorkflowStep.objects.get(workflow=workflow)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE args = %s::jsonb",
            [json.dumps({"step_id": step.id, "workflow_id": str(workflow.id), "step": "only"})],
        )
        assert cursor.fetchone() == (1,)
