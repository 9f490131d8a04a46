"""manage.py baton sweep | prune | show | cancel | retry, through call_command."""

from __future__ import annotations

import datetime
import io
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

import baton
from baton.execution import advance
from baton.models import Workflow, WorkflowStep
from tests.testapp.tasks import Collect, Echo

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("baton", *args, stdout=out)
    return out.getvalue()


def diamond() -> Workflow:
    return (
        baton.new("diamond")
        .add("a", Echo.new(value=1))
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["a"])
        .add("d", Collect.new(), deps=["b", "c"])
        .insert()
    )


def test_show_draws_steps_in_dependency_order_with_states_and_progress(clean_jobs):
    workflow = diamond()
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    claimed = advance.claim(a.id, a.job_id)
    advance.finish(claimed, advance.Completed(value_json="1", size_bytes=1))

    lines = [line for line in run("show", str(workflow.pk)).splitlines() if "why: " not in line]

    assert lines[0].startswith(f"diamond ({workflow.pk}) EXECUTING [")
    assert lines[0].endswith("] 1/4")
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["a", "b", "c", "d"]
    assert "completed" in lines[1] and "attempt 1/1" in lines[1]
    assert lines[2].startswith("  b  available") and lines[2].endswith("<- a")
    assert lines[4].startswith("    d  waiting") and lines[4].endswith("<- b, c")


def test_show_says_what_model_calls_cost(clean_jobs):
    from decimal import Decimal

    from baton.llm.ledger import Ledger
    from baton.llm.usage import Usage

    workflow = (
        baton.new("costly", budget_usd=Decimal("2"))
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .insert()
    )
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    ledger = Ledger()
    ledger.record(Usage(model="gpt-4o", input_tokens=1000, output_tokens=100), "priced")
    ledger.record(Usage(model="acme-9000", input_tokens=1, output_tokens=1), "unknown")
    cost = ledger.calls()[0].cost_usd
    assert cost is not None
    claimed = advance.claim(a.id, a.job_id)
    advance.finish(claimed, advance.Completed(value_json=None, calls=ledger.calls()))

    lines = [line for line in run("show", str(workflow.pk)).splitlines() if "why: " not in line]
    from baton.display import format_usd

    assert lines[0].endswith(f"cost {format_usd(cost, 1)} of $2.00")
    assert lines[1].startswith("a  completed") and format_usd(cost, 1) in lines[1]
    assert "$" not in lines[2]  # b recorded nothing


def test_show_follow_returns_once_finished(clean_jobs):
    workflow = diamond()
    workflow.cancel()
    out = run("show", str(workflow.pk), "--follow", "--interval", "0.01")
    assert "CANCELLED" in out


def test_unknown_workflow_is_a_clear_error(clean_jobs):
    with pytest.raises(CommandError, match="no workflow with id 'nope'"):
        run("show", "nope")
    with pytest.raises(CommandError, match="no workflow with id"):
        run("cancel", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CommandError, match="at least 4 characters"):
        run("show", "a79")


def test_cancel_then_retry(clean_jobs):
    workflow = diamond()
    assert "is cancelled; 4 step(s) cancelled" in run("cancel", str(workflow.pk))
    assert set(WorkflowStep.objects.filter(workflow=workflow).values_list("state", flat=True)) == {
        "cancelled"
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
        assert cursor.fetchone()[0] == 0  # the root's queued job was cancelled too

    assert "is executing; 4 step(s) re-queued" in run("retry", str(workflow.pk))
    states = dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state"))
    assert states == {"a": "available", "b": "waiting", "c": "waiting", "d": "waiting"}


def test_sweep_reports_what_it_rescued(clean_jobs):
    workflow = diamond()
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s", [a.job_id])
    out = run("sweep")
    assert "1 step(s) rescued" in out
    assert "rescued diamond/a" in out


def test_prune_older_than(clean_jobs):
    old, new = diamond(), diamond()
    Workflow.objects.filter(pk=old.pk).update(
        state="completed", finished_at=timezone.now() - datetime.timedelta(days=3)
    )
    assert "pruned 1 finished workflow(s)" in run("prune", "--older-than", "2d")
    assert list(Workflow.objects.values_list("pk", flat=True)) == [new.pk]
    with pytest.raises(CommandError, match="bad duration"):
        run("prune", "--older-than", "soon")
    with pytest.raises(CommandError, match="PRUNE_AFTER"):
        run("prune")


# --- show explains what waits --------------------------------------------------------------


def test_show_explains_waiting_and_queued_steps(clean_jobs):
    workflow = diamond()
    out = run("show", str(workflow.pk))
    lines = out.splitlines()
    assert lines[1].startswith("a  available")
    assert lines[2] == "  why: queued on 'default' for 0s, waiting for a worker" or lines[
        2
    ].startswith("  why: queued on 'default'")
    assert lines[3] == "  why: no worker is listening on queue 'default'"
    assert "why: waits for 1 of its 1 dependency: a (available)" in out
    assert "why: waits for 2 of its 2 dependencies: b (waiting), c (waiting)" in out


def test_show_says_a_live_worker_listens(start_worker):
    workflow = (
        baton.new("elsewhere").add("a", Echo.new().with_options(queue="nobody-here")).insert()
    )
    start_worker(queues=["default"])
    out = run("show", str(workflow.pk))
    assert "why: no worker is listening on queue 'nobody-here'" in out


def test_show_takes_a_unique_id_prefix(clean_jobs):
    workflow = diamond()
    out = run("show", str(workflow.pk)[:8])
    assert out.startswith(f"diamond ({workflow.pk})")
    with pytest.raises(CommandError, match="no workflow with id 'ffff0000'"):
        run("show", "ffff0000")


def test_show_of_a_finished_workflow_explains_nothing(clean_jobs):
    workflow = diamond()
    workflow.cancel()
    assert "why: " not in run("show", str(workflow.pk))


# --- list --------------------------------------------------------------------------------------


def test_list_newest_first_with_filters(clean_jobs):
    old = baton.new("nightly-report").add("a", Echo.new()).insert()
    Workflow.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=3)
    )
    cancelled = diamond()
    cancelled.cancel()
    newest = diamond()

    lines = run("list").splitlines()
    assert lines[0].split() == ["ID", "STATE", "STEPS", "CREATED", "TOOK", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(w.pk)[:8] for w in (newest, cancelled, old)
    ]
    assert lines[1].split()[1:3] == ["executing", "0/4"]
    assert lines[2].split()[1:3] == ["cancelled", "4/4"]
    assert lines[1].endswith("diamond")

    assert [line.split()[0] for line in run("list", "--state", "cancelled").splitlines()[1:]] == [
        str(cancelled.pk)[:8]
    ]
    assert len(run("list", "--state", "executing,cancelled").splitlines()) == 4
    assert [line.split()[-1] for line in run("list", "--name", "NIGHTLY").splitlines()[1:]] == [
        "nightly-report"
    ]
    assert len(run("list", "--since", "1d").splitlines()) == 3
    since_date = (timezone.now() - datetime.timedelta(days=5)).date().isoformat()
    assert len(run("list", "--since", since_date).splitlines()) == 4
    out = run("list", "--limit", "1")
    assert len(out.splitlines()) == 3 and "more than 1" in out
    assert run("list", "--name", "no-such-thing").strip() == "no workflows match"
    with pytest.raises(CommandError, match="unknown state 'done'"):
        run("list", "--state", "done")
    with pytest.raises(CommandError, match="bad --since"):
        run("list", "--since", "yesterday")


def test_list_fits_the_terminal(clean_jobs, monkeypatch):
    import os

    baton.new("x" * 150).add("a", Echo.new()).insert()
    monkeypatch.setattr(
        "shutil.get_terminal_size", lambda fallback=(80, 24): os.terminal_size((80, 24))
    )
    lines = run("list").splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[1].endswith("...")


# --- the worker says it is alive -------------------------------------------------------------


def test_worker_says_who_it_is_at_default_verbosity(start_worker):
    worker = start_worker(queues=["default", "llm"], concurrency=3, extra_args=["-n", "w-1"])
    deadline = time.monotonic() + 10
    while "steps:" not in worker.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = worker.log_tail(200)
    assert "baton worker w-1 starting" in log
    assert "queues:      default, llm" in log
    assert "concurrency: 3" in log
    assert f"database:    {connection.settings_dict['NAME']} on " in log
    assert "tests.testapp.tasks.Echo" in log
    # Past start-up: a step has run, so the worker's loop (and its SIGTERM handler, which
    # Procrastinate installs after registering) is up; a SIGTERM before that ends the
    # process without its farewell.
    from baton.testing import assert_completed, wait_for_workflow

    alive = baton.new("alive").add("a", Echo.new()).insert()
    assert_completed(wait_for_workflow(alive, timeout=60))
    worker.stop(timeout=60)
    assert "baton worker w-1 stopped" in worker.log_tail(5)


def test_worker_verbosity_after_the_subcommand(start_worker):
    worker = start_worker(extra_args=["-v", "2"])
    deadline = time.monotonic() + 10
    while "procrastinate" not in worker.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = worker.log_tail(200)
    assert "baton worker" in log and "every queue" in log
    assert "Starting worker on all queues" in log, log  # Procrastinate's INFO log


def test_worker_quiet_with_verbosity_0(start_worker):
    worker = start_worker(extra_args=["-v", "0"])
    time.sleep(0.3)
    assert "baton worker" not in worker.log_tail(200)


def test_worker_banner_names_steps_this_worker_does_not_take(settings):
    from baton.management.commands.baton import worker_banner

    text = worker_banner("w", ["nope"], 2)
    assert "(not taken by this worker)" in text
    assert "every queue" in worker_banner("w", [], 2)


# --- baton.testing says when the test database is not transactional -----------------------


@pytest.mark.django_db
def test_testing_helpers_refuse_a_test_transaction():
    from baton.testing import NotTransactional, WorkerProcess, run_workflow, wait_for_workflow

    builder = baton.new("never").add("a", Echo.new())
    with pytest.raises(NotTransactional, match=r"django_db\(transaction=True\)"):
        run_workflow(builder)
    assert not Workflow.objects.exists()  # refused before inserting
    with pytest.raises(NotTransactional, match="TransactionTestCase"):
        WorkerProcess().start()
    workflow = builder.insert()
    with pytest.raises(NotTransactional):
        wait_for_workflow(workflow, timeout=1)
