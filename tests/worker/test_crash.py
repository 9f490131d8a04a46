"""Crashes done for real: kill -9 of workers, a Postgres restart, job rows deleted.

Each test runs real worker processes against the test database, breaks something the way
production breaks it, lets the sweep (called by the test, as `baton sweep` would be) repair
what is left, and then checks the books:
- tests.testapp.models.Completion: a trigger on baton_step writes one row per committed
  transition into `completed`, in the completing transaction; exactly one per step means
  no step completed twice;
- tests.testapp.models.PerformRun: one row per perform() call, so re-runs are visible.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from django.db import Error as DatabaseError
from django.db import close_old_connections, connection, connections

import baton
from baton.models import StepResult, Workflow, WorkflowStep
from baton.sweep import SweepReport, sweep
from baton.testing import WorkerProcess, assert_completed
from tests.testapp import failpoints
from tests.testapp.models import Completion, PerformRun
from tests.testapp.tasks import Collect, CrashAt, GraftAt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

HEARTBEAT = 0.5  # the surviving workers' heartbeat interval, seconds
DEAD_AFTER = 2.0  # the sweep's seconds_since_heartbeat: a worker silent this long is dead


# ------------------------------------------------------------------------------ helpers
def sweep_once() -> SweepReport | None:
    """One sweep; None while the database is unreachable (during a restart)."""
    try:
        close_old_connections()
        return sweep(seconds_since_heartbeat=DEAD_AFTER, prune_after=False)
    except DatabaseError:
        connection.close()
        return None


def open_step_jobs(workflow: Workflow) -> int:
    """Jobs of this workflow's steps still `todo` or `doing` in Procrastinate."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE args->>'workflow_id' = %s "
            "AND status IN ('todo', 'doing')",
            [str(workflow.pk)],
        )
        (count,) = cursor.fetchone()
    return int(count)


def sweep_until_finished(
    workflow: Workflow, *, timeout: float = 60.0, every: float = 0.5
) -> list[SweepReport]:
    """Sweep every `every` seconds until the workflow is finished and none of its jobs is
    left open (a dead worker's `doing` job included); return the sweeps' reports."""
    reports: list[SweepReport] = []
    deadline = time.monotonic() + timeout
    while True:
        report = sweep_once()
        if report is not None:
            reports.append(report)
            try:
                current = Workflow.objects.get(pk=workflow.pk)
                if current.is_finished and open_step_jobs(workflow) == 0:
                    return reports
            except DatabaseError:
                connection.close()
        if time.monotonic() > deadline:
            states = Counter(
                WorkflowStep.objects.filter(workflow=workflow).values_list("state", flat=True)
            )
            raise AssertionError(
                f"workflow not finished after {timeout}s of sweeping: steps {dict(states)}, "
                f"{open_step_jobs(workflow)} open job(s)"
            )
        time.sleep(every)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def completions(workflow: Workflow) -> Counter[str]:
    """step name -> number of committed transitions into `completed`."""
    return Counter(
        Completion.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )


def perform_runs(workflow: Workflow) -> Counter[str]:
    return Counter(
        PerformRun.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )


def assert_each_step_completed_once(workflow: Workflow) -> None:
    assert_completed(workflow)
    names = set(WorkflowStep.objects.filter(workflow=workflow).values_list("name", flat=True))
    done = completions(workflow)
    twice = {name: n for name, n in done.items() if n != 1}
    assert not twice, f"steps completed more than once: {twice}"
    assert set(done) == names, f"completed without a record: {names - set(done)}"
    workflow.refresh_from_db()
    assert workflow.unfinished_steps == 0


def job_status(job_id: int | None) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])
        row = cursor.fetchone()
    return row[0] if row else None


@pytest.fixture
def add_worker(workers: list[WorkerProcess]) -> Callable[..., WorkerProcess]:
    """start_worker, with a choice of waiting for the worker to register; all are stopped
    (or reaped, for the dead) by the `workers` fixture."""

    def add(wait: bool = True, **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(**kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker.start(wait=wait)

    return add


# -------------------------------------------------------------- 1. kill -9 at each point
# perform() attempts of the crashed step b that the books must show: it re-runs only
# where the attempt never committed.
EXPECTED_B_RUNS = {
    "claimed": [2],  # died before perform(): the lost attempt is counted, perform ran once
    "performing": [1, 2],
    "returned": [1, 2],
    "committed": [1],  # baton had committed, and ended the job with it: nothing re-runs
}


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_kill_9_at_each_point_of_a_step(point: str, add_worker) -> None:  # type: ignore[no-untyped-def]
    workflow = (
        baton.new(f"crash-{point}")
        .add("a", CrashAt.new())
        .add("b", CrashAt.new(sleep=0.05), deps=["a"])
        .add("c", CrashAt.new(), deps=["b"])
        .insert()
    )
    doomed = add_worker(concurrency=2, env={failpoints.ENV: f"b:{point}"})
    assert doomed.process is not None
    wait_until(lambda: doomed.process.poll() is not None, 30, f"the worker to die at {point}")
    assert doomed.process.returncode == -signal.SIGKILL, doomed.log_tail()
    b = WorkflowStep.objects.get(workflow=workflow, name="b")
    assert b.state == ("completed" if point == "committed" else "executing")
    # Procrastinate never heard back; a committed completion ended its job itself.
    assert job_status(b.job_id) == ("succeeded" if point == "committed" else "doing")
    first_job = b.job_id

    add_worker(concurrency=2, heartbeat_interval=HEARTBEAT)
    reports = sweep_until_finished(workflow)

    assert_each_step_completed_once(workflow)
    b.refresh_from_db()
    assert [r.attempt for r in PerformRun.objects.filter(workflow_id=workflow.pk, step="b")] == (
        EXPECTED_B_RUNS[point]
    )
    assert perform_runs(workflow)["a"] == perform_runs(workflow)["c"] == 1
    assert b.result_value()["attempt"] == EXPECTED_B_RUNS[point][-1]
    assert StepResult.objects.filter(step__workflow=workflow).count() == 3
    # The dead worker's job is the one that finished b (retried, or ended by b's
    # committed completion); no job of the workflow is left open or failed.
    assert b.job_id == first_job
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status FROM procrastinate_jobs WHERE args->>'workflow_id' = %s",
            [str(workflow.pk)],
        )
        assert {row[0] for row in cursor.fetchall()} == {"succeeded"}
    retried = sum(r.stalled_jobs_retried for r in reports)
    closed = sum(r.stale_jobs_closed for r in reports)
    # Every completion ended its own job, so the sweep has no stale job to close.
    assert closed == 0
    if point == "committed":
        # b's job ended with b; the dead worker may have fetched c (released by b's
        # commit) before dying, and that job is retried: c still ran once (above).
        assert retried in (0, 1) and b.attempt == 1
    else:
        assert (retried, b.attempt) == (1, 2)
    if point == "performing":  # it really died inside perform()
        assert PerformRun.objects.get(workflow_id=workflow.pk, step="b", attempt=1).finished is None


# --------------------------------------------------------------------- 2. pg_ctl restart
def test_postgres_restart_mid_workflow(add_worker) -> None:  # type: ignore[no-untyped-def]
    command = os.environ.get("BATON_TEST_PG_RESTART")
    if not command:
        pytest.skip(
            "set BATON_TEST_PG_RESTART to a shell command that restarts the test database's "
            "PostgreSQL (scripts/run-tests.sh does, for its private server)"
        )
    # Slow enough (4 slots, ~0.3 s a step: ~13 steps/s) that the restart lands in the
    # middle of the 52 steps however fast the engine or the machine is.
    builder = baton.new("restart").add("root", CrashAt.new(sleep=0.05))
    for i in range(25):  # a fan-out of chains: root -> (x_i -> y_i) -> join
        builder.add(f"x{i}", CrashAt.new(sleep=0.3), deps=["root"])
        builder.add(f"y{i}", CrashAt.new(sleep=0.3), deps=[f"x{i}"])
    builder.add("join", CrashAt.new(), deps=[f"y{i}" for i in range(25)])
    # Both workers up before the workflow exists: none of it runs during a start-up.
    pair = [add_worker(concurrency=2, heartbeat_interval=HEARTBEAT) for _ in range(2)]
    workflow = builder.insert()

    wait_until(lambda: completions(workflow).total() >= 8, 30, "a few steps to complete")
    assert completions(workflow).total() < 30, "too late: the workflow is nearly done"
    subprocess.run(command, shell=True, check=True)
    connections.close_all()

    def logs() -> str:
        return "\n---\n".join(w.log_tail(30) for w in pair)

    try:
        reports = sweep_until_finished(workflow, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker logs:\n{logs()}") from None
    assert all(w.process is not None and w.process.poll() is None for w in pair), (
        f"a worker exited after the restart:\n{logs()}"
    )
    assert_each_step_completed_once(workflow)
    runs = perform_runs(workflow)
    assert set(runs) == set(completions(workflow))
    rescued = sorted(name for r in reports for name in r.rescued)
    print(
        f"restart: {runs.total() - len(runs)} extra perform run(s), rescued {rescued}, "
        f"{sum(r.stalled_jobs_retried for r in reports)} stalled job(s) retried"
    )


# --------------------------------------------------------------- 3. job rows deleted
def test_deleted_job_rows_are_rescued_by_the_sweep(add_worker) -> None:  # type: ignore[no-untyped-def]
    builder = baton.new("vanishing").add("root", CrashAt.new())
    for i in range(30):
        builder.add(f"s{i}", CrashAt.new(sleep=0.05), deps=["root"])
    builder.add("join", CrashAt.new(), deps=[f"s{i}" for i in range(30)])
    workflow = builder.insert()
    add_worker(concurrency=1, heartbeat_interval=HEARTBEAT)
    wait_until(lambda: completions(workflow).total() >= 3, 30, "a few steps to complete")

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM procrastinate_jobs WHERE status = 'todo' AND args->>'workflow_id' = %s "
            "RETURNING id",
            [str(workflow.pk)],
        )
        deleted = [row[0] for row in cursor.fetchall()]
    lost = dict(WorkflowStep.objects.filter(job_id__in=deleted).values_list("name", "job_id"))
    assert len(lost) >= 10, f"expected jobs waiting in the queue, deleted {len(lost)}"

    reports = sweep_until_finished(workflow)

    assert_each_step_completed_once(workflow)
    rescued = {name.split("/", 1)[1] for r in reports for name in r.rescued}
    # Every lost step got a new job (the workers' periodic sweep may have done some).
    for name, old_job in lost.items():
        assert WorkflowStep.objects.get(workflow=workflow, name=name).job_id != old_job, name
    assert rescued <= set(lost)
    # A job deleted while waiting never ran: each perform() ran exactly once.
    assert set(perform_runs(workflow).values()) == {1}


# ------------------------------------------------------------------- 4. kill -9 storm
@pytest.fixture
def background_sweeps() -> Iterator[list[SweepReport]]:
    """A sweep every 0.5 s in a thread, as the periodic task would do on a live system."""
    reports: list[SweepReport] = []
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(0.5):
                report = sweep_once()
                if report is not None:
                    reports.append(report)
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop, name="sweeper", daemon=True)
    thread.start()
    yield reports
    stop.set()
    thread.join(30)


STORM_STEPS = 300
MAX_KILLS = 30


def test_kill_9_storm(add_worker, background_sweeps) -> None:  # type: ignore[no-untyped-def]
    builder = baton.new("storm")
    for i in range(STORM_STEPS):
        builder.add(f"s{i}", CrashAt.new(sleep=0.25))
    builder.add("join", CrashAt.new(), deps=[f"s{i}" for i in range(STORM_STEPS)])
    workflow = builder.insert()
    live = [add_worker(concurrency=2, heartbeat_interval=HEARTBEAT) for _ in range(2)]

    rng = random.Random(4)
    kills = 0
    while kills < MAX_KILLS and not Workflow.objects.get(pk=workflow.pk).is_finished:
        time.sleep(rng.uniform(0.6, 1.4))
        victim = live.pop(rng.randrange(len(live)))
        victim.kill()
        kills += 1
        # Replaced at once, without waiting for it to register: it may die starting up.
        live.append(add_worker(wait=False, concurrency=2, heartbeat_interval=HEARTBEAT))

    sweep_until_finished(workflow, timeout=90)

    runs = perform_runs(workflow)
    extra = runs.total() - len(runs)
    summary = (
        f"storm: {kills} kill -9s, {STORM_STEPS + 1} steps, {extra} extra perform() run(s) "
        f"over {sum(1 for n in runs.values() if n > 1)} step(s), "
        f"{sum(r.stalled_jobs_retried for r in background_sweeps)} stalled job(s) retried, "
        f"{sum(r.stale_jobs_closed for r in background_sweeps)} closed"
    )
    print(summary)
    assert kills >= 10, f"the workflow finished before the storm got going; {summary}"
    assert_each_step_completed_once(workflow)
    assert set(runs) == set(completions(workflow)), summary
    # Re-runs happen only for attempts that never committed: at most one per lost attempt.
    attempts = dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "attempt"))
    over = {name: (n, attempts[name]) for name, n in runs.items() if n > attempts[name]}
    assert not over, f"perform() ran more often than the step was attempted: {over}; {summary}"


# ----------------------------------------------------- 5. kill -9 at each point of a graft
# perform() attempts of the grafting step g: it re-runs, and grafts again, only where its
# completion (and so its graft) never committed.
EXPECTED_GRAFTER_RUNS = {
    "claimed": [2],
    "performing": [1, 2],  # killed with the graft built in memory
    "returned": [1, 2],
    "grafted": [1, 2],  # killed with the graft written, before the COMMIT
    "committed": [1],
}
PARTS = 5


@pytest.mark.parametrize("point", failpoints.GRAFT_POINTS)
def test_kill_9_at_each_point_of_a_grafting_step(point: str, add_worker) -> None:  # type: ignore[no-untyped-def]
    """g grafts PARTS steps (the group "parts"); `after` depends on g, so it waits for
    the graft and reads it. Wherever g's worker dies, after a restart and the sweep the
    graft exists once, g completed once, and `after` ran once and saw every part."""
    workflow = (
        baton.new(f"graft-crash-{point}")
        .add("g", GraftAt.new(parts=PARTS))
        .add("after", Collect.new(group="parts"), deps=["g"])
        .insert()
    )
    # One slot: the doomed worker runs nothing but g (no part starts there before it dies).
    doomed = add_worker(concurrency=1, env={failpoints.ENV: f"g:{point}"})
    assert doomed.process is not None
    wait_until(lambda: doomed.process.poll() is not None, 30, f"the worker to die at {point}")
    assert doomed.process.returncode == -signal.SIGKILL, doomed.log_tail()
    g = WorkflowStep.objects.get(workflow=workflow, name="g")
    parts = WorkflowStep.objects.filter(workflow=workflow, group="parts")
    if point == "committed":
        assert g.state == "completed" and parts.count() == PARTS
    else:  # nothing of the graft was committed
        assert g.state == "executing" and not parts.exists()
        assert Workflow.objects.get(pk=workflow.pk).step_count == 2

    add_worker(concurrency=2, heartbeat_interval=HEARTBEAT)
    sweep_until_finished(workflow)

    assert_each_step_completed_once(workflow)
    runs = [r.attempt for r in PerformRun.objects.filter(workflow_id=workflow.pk, step="g")]
    assert runs == EXPECTED_GRAFTER_RUNS[point]
    g.refresh_from_db()
    assert g.result_value() == {"parts": PARTS, "attempt": runs[-1]}
    # The graft exists once: PARTS steps, each grafted by g, counted once in the workflow.
    names = {f"parts[{i}]" for i in range(PARTS)}
    assert dict(parts.values_list("name", "grafted_by")) == dict.fromkeys(names, g.id)
    workflow.refresh_from_db()
    assert (
        workflow.step_count == WorkflowStep.objects.filter(workflow=workflow).count() == PARTS + 2
    )
    counts = perform_runs(workflow)
    assert all(counts[name] == 1 for name in names), counts
    assert counts["after"] == 1
    after = WorkflowStep.objects.get(workflow=workflow, name="after")
    assert (after.deps_total, after.deps_pending) == (1 + PARTS, 0)
    assert after.result_value()["seen"] == {
        str(i): {"step": f"parts[{i}]", "attempt": 1} for i in range(PARTS)
    }
