"""manage.py baton sweep | prune | show | cancel | retry, through call_command."""

from __future__ import annotations

import datetime
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

import baton
from baton.execution import advance
from baton.models import Step, Workflow
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
    a = Step.objects.get(workflow=workflow, name="a")
    claimed = advance.claim(a.id, a.job_id)
    advance.finish(claimed, advance.Completed(value_json="1", size_bytes=1))

    lines = run("show", str(workflow.pk)).splitlines()

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
    a = Step.objects.get(workflow=workflow, name="a")
    ledger = Ledger()
    ledger.record(Usage(model="gpt-4o", input_tokens=1000, output_tokens=100), "priced")
    ledger.record(Usage(model="acme-9000", input_tokens=1, output_tokens=1), "unknown")
    cost = ledger.calls()[0].cost_usd
    assert cost is not None
    claimed = advance.claim(a.id, a.job_id)
    advance.finish(claimed, advance.Completed(value_json=None, calls=ledger.calls()))

    lines = run("show", str(workflow.pk)).splitlines()
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


def test_cancel_then_retry(clean_jobs):
    workflow = diamond()
    assert "is cancelled; 4 step(s) cancelled" in run("cancel", str(workflow.pk))
    assert set(Step.objects.filter(workflow=workflow).values_list("state", flat=True)) == {
        "cancelled"
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
        assert cursor.fetchone()[0] == 0  # the root's queued job was cancelled too

    assert "is executing; 4 step(s) re-queued" in run("retry", str(workflow.pk))
    states = dict(Step.objects.filter(workflow=workflow).values_list("name", "state"))
    assert states == {"a": "available", "b": "waiting", "c": "waiting", "d": "waiting"}


def test_sweep_reports_what_it_rescued(clean_jobs):
    workflow = diamond()
    a = Step.objects.get(workflow=workflow, name="a")
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
