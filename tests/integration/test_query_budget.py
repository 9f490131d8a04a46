"""The SQL statements baton runs per step execution do not grow with the workflow.

Measured in-process (no worker): the test claims and finishes steps through
baton.execution.advance exactly as the task wrapper does, and counts the statements
Django's connection executes (baton's own and the Procrastinate jobs it defers on that
connection) with CaptureQueriesContext. The measured numbers are printed (`pytest -s`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import baton
from baton.execution import advance
from baton.models import StepResult, Workflow, WorkflowStep
from tests.helpers import completed, run_step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")

# The measured budget, in statements Django's connection executes (BEGIN and COMMIT
# count when baton opens a transaction block). What the tests prove is that these do
# not vary with the workflow's size, fan-in or fan-out; the exact numbers are pinned so
# that a change to baton.execution.advance that adds statements is noticed.
CLAIM = 1  # the gate: one UPDATE, atomic by itself
# A completion is one statement, whatever it releases (see advance._COMPLETE_SQL).
FINISH_RELEASING = 1  # a completion that makes dependents ready (inserts their jobs)
FINISH_NOT_RELEASING = 1  # a completion after which no dependent is ready yet
FINISH_LAST = 2  # the completion that finishes the workflow + its workflow_finished load
DISCARD_ONE_LEVEL = 9  # a discard that cancels one level of dependents
DISCARD_PER_LEVEL = 2  # each further level the cascade cancels


class Rollback(Exception):
    pass


def step_row(workflow: Workflow, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def claim(workflow: Workflow, name: str) -> advance.Claim:
    row = step_row(workflow, name)
    assert row.job_id is not None, f"{name} is {row.state}, it has no job"
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None, f"{name} could not be claimed"
    return claimed


def measure(
    workflow: Workflow, name: str, outcome: advance.AttemptOutcome | None = None
) -> tuple[int, int]:
    """(statements of the claim, statements of the finish) for one step execution."""
    row = step_row(workflow, name)
    assert row.job_id is not None
    with CaptureQueriesContext(connection) as claim_queries:
        claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    with CaptureQueriesContext(connection) as finish_queries:
        assert advance.finish(claimed, outcome or completed({"step": name}))
    for query in [*claim_queries, *finish_queries]:  # shown by pytest when a test fails
        print(f"    {' '.join(query['sql'].split())[:120]}")
    return len(claim_queries), len(finish_queries)


def job_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs")
        (count,) = cursor.fetchone()
    return int(count)


def fan_out(width: int) -> Workflow:
    workflow: Workflow = (
        baton.new(f"fan-out-{width}")
        .add("root", Echo.new())
        .add_many("parts", [Echo.new() for _ in range(width)], deps=["root"])
        .insert()
    )
    return workflow


def fan_in(width: int) -> Workflow:
    workflow: Workflow = (
        baton.new(f"fan-in-{width}")
        .add_many("parts", [Echo.new() for _ in range(width)])
        .add("join", Echo.new(), deps=["parts"])
        .insert()
    )
    return workflow


def chain(length: int) -> Workflow:
    builder = baton.new(f"chain-{length}").add("s0", Echo.new())
    for index in range(1, length):
        builder.add(f"s{index}", Echo.new(), deps=[f"s{index - 1}"])
    workflow: Workflow = builder.insert()
    return workflow


@pytest.fixture
def report() -> Iterator[dict[str, tuple[int, int]]]:
    measured: dict[str, tuple[int, int]] = {}
    yield measured
    for case, (claim_count, finish_count) in measured.items():
        print(f"\n[query budget] {case}: claim {claim_count} + finish {finish_count} statements")


def test_chain_step(report: dict[str, tuple[int, int]]) -> None:
    """A middle step of a chain: claim CLAIM (1) statement, finish FINISH_RELEASING (1)."""
    workflow = chain(3)
    run_step(workflow, "s0")
    report["chain middle step"] = measure(workflow, "s1")
    assert report["chain middle step"] == (CLAIM, FINISH_RELEASING)
    assert step_row(workflow, "s2").state == "available"


def test_fan_out_does_not_grow_with_dependents(report: dict[str, tuple[int, int]]) -> None:
    """A root releasing 10 or 1,000 dependents: the same statements (claim 1, finish 1);
    all ready dependents are made available and their jobs inserted in that statement."""
    small, large = fan_out(10), fan_out(1_000)
    report["fan-out root, 10 dependents"] = measure(small, "root")
    report["fan-out root, 1,000 dependents"] = measure(large, "root")
    assert report["fan-out root, 10 dependents"] == report["fan-out root, 1,000 dependents"]
    assert report["fan-out root, 1,000 dependents"] == (CLAIM, FINISH_RELEASING)
    assert WorkflowStep.objects.filter(workflow=large, state="available").count() == 1_000


def test_fan_in_does_not_grow_with_dependencies(report: dict[str, tuple[int, int]]) -> None:
    """The last of 10 or 1,000 dependencies of a join: the same statements (claim 1,
    finish 1); an earlier one, after which the join is not ready yet: finish 1 too."""
    counts = {}
    for width in (10, 1_000):
        workflow = fan_in(width)
        for index in range(width - 2):
            run_step(workflow, f"parts[{index}]")
        counts[width, "not last"] = measure(workflow, f"parts[{width - 2}]")
        assert step_row(workflow, "join").state == "waiting"
        counts[width, "last"] = measure(workflow, f"parts[{width - 1}]")
        assert step_row(workflow, "join").state == "available"
        report[f"fan-in {width}, last dep"] = counts[width, "last"]
        report[f"fan-in {width}, a dep that is not last"] = counts[width, "not last"]
    assert counts[10, "last"] == counts[1_000, "last"] == (CLAIM, FINISH_RELEASING)
    assert counts[10, "not last"] == counts[1_000, "not last"] == (CLAIM, FINISH_NOT_RELEASING)


def test_workflow_size_does_not_matter(report: dict[str, tuple[int, int]]) -> None:
    """A step of a 10-step or a 5,000-step workflow (the first of a chain): claim 1,
    finish 1, whatever the size. The last step, which finishes the workflow (and loads it
    after the commit for workflow_finished): FINISH_LAST, whether the workflow has 2 or
    1,001 steps."""
    counts = {}
    for length in (10, 5_000):
        workflow = chain(length)
        counts[length, "first"] = measure(workflow, "s0")
        report[f"chain of {length}, first step"] = counts[length, "first"]
    assert counts[10, "first"] == counts[5_000, "first"] == (CLAIM, FINISH_RELEASING)

    # The last step (it finishes the workflow) of a short chain against a long fan-in.
    short = chain(2)
    run_step(short, "s0")
    wide = fan_in(1_000)
    for index in range(1_000):
        run_step(wide, f"parts[{index}]")
    report["last step of a 2-step workflow"] = measure(short, "s1")
    report["last step of a 1,001-step workflow"] = measure(wide, "join")
    assert report["last step of a 2-step workflow"] == (CLAIM, FINISH_LAST)
    assert report["last step of a 1,001-step workflow"] == (CLAIM, FINISH_LAST)
    for workflow in (short, wide):
        workflow.refresh_from_db()
        assert workflow.state == "completed" and workflow.unfinished_steps == 0


def discard_tree(width: int, depth: int) -> Workflow:
    """A root with `width` dependents, each the head of a chain of `depth` steps."""
    builder = baton.new(f"discard-{width}x{depth}").add("root", Echo.new())
    for index in range(width):
        previous = "root"
        for level in range(depth):
            builder.add(f"l{level}-{index}", Echo.new(), deps=[previous])
            previous = f"l{level}-{index}"
    workflow: Workflow = builder.insert()
    return workflow


def test_discard_cascade_is_constant_per_level(report: dict[str, tuple[int, int]]) -> None:
    """A discarded root cancelling 10 or 1,000 dependents per level: the statements
    depend on the number of levels only, not on how many steps each level holds: finish
    is 9 statements with one level cancelled (BEGIN, discard, lock the dependents, cancel
    them, look for the next level, count down and finish the workflow, COMMIT, then load
    the workflow for workflow_finished) and 2 more (lock, cancel) per further level."""
    discard = advance.Discarded(reason="no")
    counts = {}
    for width in (10, 1_000):
        for depth in (1, 2, 3):
            workflow = discard_tree(width, depth)
            counts[width, depth] = measure(workflow, "root", discard)
            report[f"discard cascade, {width} wide, {depth} level(s)"] = counts[width, depth]
            workflow.refresh_from_db()
            assert workflow.state == "failed"
            assert WorkflowStep.objects.filter(workflow=workflow, state="cancelled").count() == (
                width * depth
            )
    for depth in (1, 2, 3):
        assert counts[10, depth] == counts[1_000, depth]
    assert counts[10, 1] == (CLAIM, DISCARD_ONE_LEVEL)
    assert counts[10, 2][1] - counts[10, 1][1] == DISCARD_PER_LEVEL
    assert counts[10, 3][1] - counts[10, 2][1] == DISCARD_PER_LEVEL


def test_rolled_back_completion_defers_nothing() -> None:
    """finish() inside the caller's transaction: a rollback takes back the step's
    completion, its result, the dependents' release and their Procrastinate jobs."""
    workflow = (
        baton.new("rollback")
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["a"])
        .insert()
    )
    claimed = claim(workflow, "a")
    jobs_before = job_count()
    with pytest.raises(Rollback), transaction.atomic():
        assert advance.finish(claimed, completed({"a": 1}))
        # Inside the transaction the release happened, with its jobs...
        assert job_count() == jobs_before + 2
        assert step_row(workflow, "b").state == "available"
        raise Rollback
    # ... and the rollback removed all of it.
    assert job_count() == jobs_before
    a, b, c = (step_row(workflow, name) for name in "abc")
    assert a.state == "executing"
    assert not StepResult.objects.filter(step=a).exists()
    for dependent in (b, c):
        assert dependent.state == "waiting" and dependent.job_id is None
        assert dependent.deps_pending == 1
    workflow.refresh_from_db()
    assert workflow.unfinished_steps == 3

    # The same attempt can still finish for real, and then it releases its dependents.
    assert advance.finish(claimed, completed({"a": 1}))
    assert job_count() == jobs_before + 2
    assert {step_row(workflow, name).state for name in "bc"} == {"available"}


# ------------------------------------------------------------- prepared hot statements
def prepared_statements() -> dict[str, int]:
    """baton's prepared statements on Django's connection: first words -> executions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements "
            "WHERE NOT from_sql"
        )
        return {" ".join(text.split()[:4]): runs for text, runs in cursor.fetchall()}


def run_fan(width: int) -> None:
    workflow = (
        baton.new("prepared")
        .add("root", Echo.new())
        .add_many("fan", [Echo.new() for _ in range(width)], deps=["root"])
        .insert()
    )
    run_step(workflow, "root")
    for index in range(width):
        run_step(workflow, f"fan[{index}]")


def test_claim_and_completion_are_prepared_once_per_connection(clean_jobs: None) -> None:
    # Django keeps psycopg's prepared statements off (prepare_threshold=None); baton's two
    # per-step statements are prepared anyway, so Postgres neither parses nor plans them
    # at every step, and nothing else on the connection is prepared.
    connection.close()
    run_fan(6)
    statements = prepared_statements()
    assert connection.connection.prepare_threshold is None
    assert statements == {
        "UPDATE baton_step s SET": 7,  # the claim
        "WITH done AS (": 7,  # the completion
    }


def test_prepare_threshold_none_in_options_keeps_statements_unprepared(
    clean_jobs: None,
) -> None:
    # A connection pooler that cannot carry prepared statements: the user says so with
    # OPTIONS = {"prepare_threshold": None}, and baton prepares nothing.
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["prepare_threshold"] = None
    try:
        connection.close()
        run_fan(3)
        assert prepared_statements() == {}
    finally:
        del options["prepare_threshold"]
        connection.close()


# ------------------------------------------------------------ plans that do not grow
def rows_read_per_table(plan: dict) -> dict[str, int]:
    """Rows each table's scans returned in an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    totals: dict[str, int] = {}

    def walk(node: dict) -> None:
        if "Relation Name" in node and node["Node Type"].endswith("Scan"):
            read = int(node["Actual Rows"]) * int(node["Actual Loops"])
            totals[node["Relation Name"]] = totals.get(node["Relation Name"], 0) + read
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return totals


def test_completion_reads_no_more_rows_when_many_steps_wait_elsewhere(clean_jobs) -> None:
    # Thousands of steps waiting in another workflow, inserted just now (statistics
    # stale, as after any large insert): the completion's generic plan, which a worker's
    # connection keeps, must still go from the step's edges to its dependents, not read
    # every waiting step in the database.
    big = baton.new("waiting")
    for index in range(3000):
        big.add(f"s{index}", Echo.new(), deps=[f"s{index - 1}"] if index else [])
    big.insert()
    workflow = (
        baton.new("small")
        .add("a", Echo.new())
        .add_many("fan", [Echo.new() for _ in range(3)], deps=["a"])
        .insert()
    )
    claimed = claim(workflow, "a")
    sql = advance._COMPLETE_SQL
    names = ["id", "job_id", "attempt", "value", "has_value", "size", "finish_job", "delete_job"]
    for position, name in enumerate(names, start=1):
        sql = sql.replace(f"%({name})s", f"${position}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(
            "PREPARE baton_test_complete (bigint, bigint, int, jsonb, boolean, int, boolean, "
            "boolean) AS " + sql
        )
        try:
            cursor.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE baton_test_complete "
                "(%s, %s, %s, NULL, false, 0, false, false)",
                [claimed.step.id, claimed.job_id, claimed.attempt],
            )
            output = cursor.fetchone()[0]
        finally:
            cursor.execute("DEALLOCATE baton_test_complete")
        transaction.set_rollback(True)
    (plan,) = json.loads(output) if isinstance(output, str) else output
    read = rows_read_per_table(plan)
    # The step itself, its three dependents, the workflow row: a handful, not 3,000.
    assert read.get("baton_step", 0) <= 10, read
    assert read.get("baton_stepdependency", 0) <= 10, read


def test_the_per_step_statements_fit_psycopg_s_query_cache() -> None:
    """psycopg converts a query's placeholders once and caches it, for queries up to
    MAX_CACHED_STATEMENT_LENGTH; a longer one is converted again at every step."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    from baton.execution import claim, complete

    for module, name in [
        (claim, "_CLAIM_SQL"),
        (claim, "FETCH_AND_CLAIM_SQL"),
        (complete, "_COMPLETE_SQL"),
        (complete, "_COMPLETE_WITH_CALLS_SQL"),
    ]:
        assert len(getattr(module, name)) <= MAX_CACHED_STATEMENT_LENGTH, name
