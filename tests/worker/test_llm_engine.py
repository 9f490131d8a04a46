"""The LLM ledger in the engine: what an attempt's model calls leave in the database.
(The pure parts, backoff and defaults, are in tests/unit/test_llm_backoff.py.)

Against real PostgreSQL: in-process (claim and finish as the task wrapper does, to pin
statements and fences) and with a real worker process running LLMStep subclasses
(tests/testapp/tasks.py: FakeModelCall, SlowModelCall), priced by the default pricing
(genai-prices' bundled data).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import baton
from baton import stats
from baton.execution import advance
from baton.llm.ledger import Ledger
from baton.llm.pricing import DefaultPricing
from baton.llm.usage import Usage
from baton.models import LLMUsage, Workflow, WorkflowStep
from baton.testing import wait_for_workflow
from tests.helpers import claim, completed
from tests.helpers import step_row as step
from tests.testapp.tasks import Echo, FakeModelCall, SlowModelCall

PRICING = DefaultPricing()
LLM_QUEUES = ["default", "llm"]


def cost_of(model: str, input_tokens: int, output_tokens: int, cache_read: int = 0) -> Decimal:
    usage = Usage(
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
    )
    price = PRICING.cost(usage)
    assert price is not None, f"genai-prices should know {model}"
    return price


def calls(*usages: tuple[str, Usage]) -> tuple[Any, ...]:
    ledger = Ledger()
    for key, usage in usages:
        ledger.record(usage, key)
    return ledger.calls()


# ------------------------------------------------------------------- in-process (fences)
@pytest.mark.django_db(transaction=True)
def test_a_completion_stores_its_calls_and_running_costs_in_one_statement() -> None:
    workflow = baton.new("ledger").add("a", Echo.new()).add("b", Echo.new(), deps=["a"]).insert()
    mini = Usage(model="gpt-4o-mini", input_tokens=1200, output_tokens=300, cache_read_tokens=200)
    unknown = Usage(model="acme-9000", input_tokens=10, output_tokens=1)
    claimed = claim(workflow, "a")
    outcome = advance.Completed(
        value_json='{"text": "x"}', size_bytes=13, calls=calls(("m", mini), ("u", unknown))
    )
    with CaptureQueriesContext(connection) as queries:
        assert advance.finish(claimed, outcome)
    # The same one statement a plain completion costs (tests/integration/test_query_budget.py).
    assert len(queries) == 1, [q["sql"][:80] for q in queries]

    expected = cost_of("gpt-4o-mini", 1200, 300, cache_read=200)
    rows = list(LLMUsage.objects.filter(workflow=workflow).order_by("call_key"))
    assert [(r.call_key, r.model, r.attempt) for r in rows] == [
        ("m", "gpt-4o-mini", 1),
        ("u", "acme-9000", 1),
    ]
    assert rows[0].cost_usd == expected and isinstance(rows[0].cost_usd, Decimal)
    assert rows[0].cache_read_tokens == 200 and rows[0].job_id == claimed.job_id
    assert rows[1].cost_usd is None  # unknown, never 0
    a = step(workflow, "a")
    assert (a.cost_usd, a.unpriced_calls) == (expected, 1)
    workflow.refresh_from_db()
    assert (workflow.cost_usd, workflow.unpriced_calls) == (expected, 1)
    assert step(workflow, "b").state == "available"


@pytest.mark.django_db(transaction=True)
def test_a_superseded_attempt_stores_no_calls() -> None:
    workflow = baton.new("fenced").add("a", Echo.new()).insert()
    claimed = claim(workflow, "a")
    usage = Usage(model="gpt-4o-mini", input_tokens=100, output_tokens=10)
    assert advance.finish(claimed, completed("first"))
    late = advance.Completed(value_json=None, calls=calls(("k", usage)))
    assert not advance.finish(claimed, late)  # the attempt was already recorded
    assert not LLMUsage.objects.exists()
    workflow.refresh_from_db()
    assert workflow.cost_usd is None and workflow.unpriced_calls == 0


@pytest.mark.django_db(transaction=True)
def test_failed_attempts_calls_count() -> None:
    """A retryable failure and the final discard both store what they spent, on the step
    and on the workflow."""
    workflow = (
        baton.new("spent")
        .add("a", FakeModelCall.new().with_options(max_attempts=2))
        .add("b", Echo.new(), deps=["a"])
        .insert()
    )
    usage = Usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    one = cost_of("gpt-4o-mini", 1000, 100)
    first = claim(workflow, "a")
    assert advance.finish(
        first, advance.Rescheduled(0.0, snooze=False, error="boom", calls=calls(("c", usage)))
    )
    second = claim(workflow, "a")
    assert advance.finish(
        second, advance.Discarded(reason="gave up", error="boom", calls=calls(("c", usage)))
    )
    rows = LLMUsage.objects.filter(step__name="a", workflow=workflow)
    assert sorted(rows.values_list("attempt", flat=True)) == [1, 2]
    assert step(workflow, "a").cost_usd == 2 * one
    workflow.refresh_from_db()
    assert workflow.state == "failed"
    assert workflow.cost_usd == 2 * one
    assert stats.workflow_totals(workflow)["cost_usd"] == 2 * one


# ------------------------------------------------------------------------ real worker
@pytest.mark.worker
def test_usage_is_stripped_recorded_once_per_key_and_counted_across_retries(
    start_worker: Any,
) -> None:
    start_worker(concurrency=2, queues=LLM_QUEUES)
    workflow = (
        baton.new("strip")
        .add("ask", FakeModelCall.new(keys=["x", "x", "y"], succeed_on=2))
        .add("read", _collect(), deps=["ask"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    ask = step(workflow, "ask")
    # Stored and passed downstream without the usage key.
    assert ask.result_value() == {"text": "ask by gpt-4o-mini"}
    assert step(workflow, "read").result_value() == {
        "seen": {"ask": {"text": "ask by gpt-4o-mini"}}
    }
    rows = LLMUsage.objects.filter(step=ask).order_by("attempt", "call_key")
    # Attempt 1 failed after its calls x and y (x recorded twice, counted once); attempt 2
    # made them again and returned its result's usage.
    assert [(r.attempt, r.call_key) for r in rows] == [
        (1, "x"),
        (1, "y"),
        (2, "result"),
        (2, "x"),
        (2, "y"),
    ]
    by_hand = cost_of("gpt-4o-mini", 100, 10)
    result = cost_of("gpt-4o-mini", 1000, 200)
    expected = 4 * by_hand + result
    assert ask.cost_usd == expected
    workflow.refresh_from_db()
    assert workflow.cost_usd == expected and workflow.unpriced_calls == 0
    totals = stats.workflow_totals(workflow)
    assert totals["cost_usd"] == expected and isinstance(totals["cost_usd"], Decimal)
    assert totals["input_tokens"] == 4 * 100 + 1000 and totals["calls"] == 5
    assert rows[0].latency_ms == 5


def _collect() -> Any:
    from tests.testapp.tasks import Collect

    return Collect.new()


@pytest.mark.worker
def test_unknown_models_are_unpriced_and_decimals_add_up_exactly(start_worker: Any) -> None:
    start_worker(concurrency=4, queues=LLM_QUEUES)
    models = ["gpt-4o-mini", "gpt-4o", "acme-9000"]
    workflow = (
        baton.new("prices")
        .fan_out(
            "ask",
            FakeModelCall,
            models=models,
            args={"input_tokens": 1234, "output_tokens": 567, "cache_read_tokens": 34},
            synthesize_with=FakeModelCall,
            synthesize_model="acme-9000",
        )
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    known = cost_of("gpt-4o-mini", 1234, 567, 34) + cost_of("gpt-4o", 1234, 567, 34)
    workflow.refresh_from_db()
    assert workflow.cost_usd == known  # exact: Decimals end to end
    assert workflow.unpriced_calls == 2  # acme-9000 twice: unknown, never 0
    per_step = {row["step"]: row for row in stats.steps_for_workflow(workflow)}
    assert per_step["ask[acme-9000]"]["cost_usd"] is None
    assert per_step["ask[acme-9000]"]["unpriced_calls"] == 1
    assert per_step["ask[gpt-4o]"]["cost_usd"] == cost_of("gpt-4o", 1234, 567, 34)
    assert step(workflow, "ask_synthesis").result_value() == {"text": "ask_synthesis by acme-9000"}
    by_model = {row["model"]: row for row in stats.cost_by_model()}
    assert by_model["acme-9000"]["cost_usd"] is None
    assert by_model["acme-9000"]["calls"] == 2
    assert sum(row["cost_usd"] or 0 for row in by_model.values()) >= known


@pytest.mark.worker
def test_a_rate_limit_snoozes_without_spending_an_attempt(start_worker: Any) -> None:
    start_worker(concurrency=2, queues=LLM_QUEUES)
    workflow = (
        baton.new("limited")
        .add("ask", FakeModelCall.new(rate_limited_until=2).with_options(max_attempts=1))
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"  # max_attempts=1: two failures would discard it
    ask = step(workflow, "ask")
    assert (ask.attempt, ask.snoozes) == (1, 2)


@pytest.mark.worker
def test_budget_stops_llm_steps_not_yet_started_while_plain_steps_run(
    start_worker: Any,
) -> None:
    """The first model call spends more than the budget: the LLM step after it is
    discarded at its claim without calling a model, the plain step still runs."""
    start_worker(concurrency=2, queues=LLM_QUEUES)
    budget = Decimal("0.0001")
    workflow = (
        baton.new("budgeted", budget_usd=budget)
        .add("first", FakeModelCall.new(model="gpt-4o", input_tokens=100_000))
        .add("second", FakeModelCall.new(model="gpt-4o"), deps=["first"])
        .add("plain", Echo.new(value="still runs"), deps=["first"])
        .add("after_second", Echo.new(), deps=["second"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "failed"
    spent = cost_of("gpt-4o", 100_000, 200)
    assert workflow.cost_usd == spent > budget
    second = step(workflow, "second")
    assert (second.state, second.reason) == ("discarded", "budget exceeded")
    assert second.attempt == 1 and second.last_error == ""
    assert not LLMUsage.objects.filter(step=second).exists()  # no model was called
    assert step(workflow, "plain").state == "completed"
    assert step(workflow, "after_second").state == "cancelled"
    assert workflow.reason == f"budget exceeded: spent ${spent.normalize():f} of a $0.0001 budget"


@pytest.mark.django_db(transaction=True)
def test_workflow_finished_carries_the_workflow_reason() -> None:
    from baton import signals

    finished: list[tuple[str, str]] = []

    def on_finished(sender: Any, workflow: Any, state: str, **kwargs: Any) -> None:
        finished.append((state, workflow.reason))

    signals.workflow_finished.connect(on_finished, weak=False)
    try:
        workflow = baton.new("why").add("a", FakeModelCall.new()).insert()
        reason = "budget exceeded: spent $1 of a $1 budget"
        assert advance.finish(
            claim(workflow, "a"),
            advance.Discarded(reason="budget exceeded", workflow_reason=reason),
        )
    finally:
        signals.workflow_finished.disconnect(on_finished)
    assert finished == [("failed", reason)]


@pytest.mark.worker
def test_async_llm_step_records_usage(start_worker: Any) -> None:
    start_worker(concurrency=2, queues=LLM_QUEUES)
    workflow = baton.new("async").add("slow", SlowModelCall.new(sleep=0.05)).insert()
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    assert step(workflow, "slow").result_value() == {"text": "slow"}
    assert workflow.cost_usd == cost_of("gpt-4o", 1000, 10)


@pytest.mark.django_db(transaction=True)
def test_fan_out_collisions_are_invalid_and_insert_nothing() -> None:
    cases = [
        baton.new("dup").fan_out("ask", FakeModelCall, models=["gpt-4o", "gpt-4o"]),
        baton.new("base").add("ask", Echo.new()).fan_out("ask", FakeModelCall, models=["gpt-4o"]),
        baton.new("synth")
        .add("ask_synthesis", Echo.new())
        .fan_out("ask", FakeModelCall, models=["gpt-4o"], synthesize_with=FakeModelCall),
    ]
    messages = []
    for builder in cases:
        with pytest.raises(baton.InvalidWorkflow) as caught:
            builder.insert()
        messages.append(" ".join(caught.value.errors))
    assert "more than once" in messages[0] and "'gpt-4o'" in messages[0]
    assert "'ask'" in messages[1] and "group" in messages[1]
    assert "duplicate step name 'ask_synthesis'" in messages[2]
    assert not Workflow.objects.exists() and not WorkflowStep.objects.exists()


@pytest.mark.worker
def test_timeouts_cancel_async_calls_and_give_sync_calls_a_deadline(start_worker: Any) -> None:
    from tests.testapp.tasks import DeadlineReport, HangingModelCall

    start_worker(concurrency=2, queues=LLM_QUEUES)
    workflow = (
        baton.new("timeouts")
        .add("hangs", HangingModelCall.new(sleep=30))
        .add("sync", DeadlineReport.new())
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    hangs = step(workflow, "hangs")
    assert (hangs.state, hangs.attempt) == ("discarded", 2)
    assert "TimeoutError" in hangs.last_error
    assert not LLMUsage.objects.filter(step=hangs).exists()  # it never returned usage
    report = step(workflow, "sync").result_value()
    assert report["has_deadline"] is True
    assert 0 < report["time_left"] <= 30.0


@pytest.mark.django_db(transaction=True)
def test_a_budget_stop_fails_the_workflow_even_when_dependents_ignore_it() -> None:
    workflow = (
        baton.new("absorbed")
        .add("ask", FakeModelCall.new())
        .add("report", Echo.new(value="partial"), deps=["ask"], ignore_discarded=True)
        .insert()
    )
    reason = "budget exceeded: spent $3 of a $2 budget"
    stopped = advance.Discarded(reason="budget exceeded", workflow_reason=reason)
    assert advance.finish(claim(workflow, "ask"), stopped)
    assert advance.finish(claim(workflow, "report"), completed("partial"))
    workflow.refresh_from_db()
    assert (workflow.state, workflow.reason, workflow.failed_steps) == ("failed", reason, ["ask"])


@pytest.mark.worker
def test_a_returned_rate_limit_snoozes_too(start_worker: Any) -> None:
    from tests.testapp.tasks import ReturnsRateLimit

    start_worker(concurrency=2, queues=LLM_QUEUES)
    workflow = baton.new("returned").add("ask", ReturnsRateLimit.new()).insert()
    workflow = wait_for_workflow(workflow, timeout=60)
    ask = step(workflow, "ask")
    assert (workflow.state, ask.attempt, ask.snoozes) == ("completed", 1, 1)
