"""The research-brief workflow (example_project/research) run by a real worker on the
"default" and "llm" queues, with the fake model provider, priced by genai-prices."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from baton import stats
from baton.llm import retry_after_hint
from baton.llm.pricing import DefaultPricing
from baton.llm.usage import Usage
from baton.models import DebugRecord, LLMUsage, Workflow, WorkflowStep
from baton.testing import WorkerProcess, assert_completed, step_states, wait_for_workflow
from example_project.research import providers
from example_project.research.tasks import (
    DEFAULT_TOPIC,
    KEYWORD_MODEL,
    SUMMARY_MODELS,
    SYNTHESIS_MODEL,
    SYNTHESIS_SYSTEM,
    build_research_brief,
)

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "llm"]  # what `make demo`'s worker listens on
SUMMARIES = [f"summaries[{model}]" for model in SUMMARY_MODELS]
PLAIN_STEPS = ["fetch_sources", "credibility", "compile_brief"]


def run(workflow: Workflow, *, concurrency: int = 4) -> Workflow:
    with WorkerProcess(concurrency=concurrency, queues=QUEUES):
        return wait_for_workflow(workflow, timeout=60)


def step(workflow: Workflow, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def ledger_cost(workflow: Workflow) -> Decimal:
    costs = LLMUsage.objects.filter(workflow=workflow).values_list("cost_usd", flat=True)
    return sum((cost for cost in costs if cost is not None), Decimal(0))


# ------------------------------------------------------------------------ the workflow
def test_research_brief_completes_and_costs_what_its_ledger_says():
    workflow = build_research_brief(
        budget_usd=Decimal("0.05"), rate_limited_model="gemini-1.5-flash"
    )

    workflow = run(workflow)

    assert_completed(workflow)
    assert set(step_states(workflow)) == {
        *PLAIN_STEPS,
        *SUMMARIES,
        "summaries_synthesis",
        "keywords",
    }
    # One model call per LLM step, each priced under the provider that serves it, except
    # the in-house tagger, which genai-prices does not know: unpriced, never 0.
    calls = {row.step.name: row for row in LLMUsage.objects.filter(workflow=workflow)}
    assert set(calls) == {*SUMMARIES, "summaries_synthesis", "keywords"}
    assert {name: row.model for name, row in calls.items()} == {
        **{f"summaries[{model}]": model for model in SUMMARY_MODELS},
        "summaries_synthesis": SYNTHESIS_MODEL,
        "keywords": KEYWORD_MODEL,
    }
    assert [calls[name].provider for name in SUMMARIES] == ["openai", "anthropic", "google"]
    pricing = DefaultPricing()
    for name, row in calls.items():
        usage = Usage(
            model=row.model,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            provider=row.provider or None,
        )
        if name == "keywords":
            assert row.cost_usd is None
        else:
            assert row.cost_usd == pricing.cost(usage) and row.cost_usd > 0
        assert step(workflow, name).cost_usd == row.cost_usd
    # The workflow's running total is the ledger's sum, exactly; stats agree.
    totals = stats.workflow_totals(workflow)
    assert workflow.cost_usd == ledger_cost(workflow) == totals["cost_usd"]
    assert workflow.cost_usd < workflow.budget_usd
    assert (workflow.unpriced_calls, totals["unpriced_calls"], totals["calls"]) == (1, 1, 5)
    assert totals["input_tokens"] == sum(row.input_tokens for row in calls.values())
    # Tokens are about a quarter of the characters: the summaries read the same prompt.
    assert len({calls[name].input_tokens for name in SUMMARIES}) == 1
    assert calls[SUMMARIES[0]].input_tokens > 500
    # Recorded by hand, with its key and the latency the step measured.
    tagger = calls["keywords"]
    assert tagger.call_key == "tagger"
    assert tagger.latency_ms >= providers.latency_of(KEYWORD_MODEL) * 1000 - 5
    # The rate-limited model snoozed once, which spent no attempt.
    gemini = step(workflow, "summaries[gemini-1.5-flash]")
    assert (gemini.attempt, gemini.snoozes) == (1, 1)
    assert all(step(workflow, name).attempt == 1 for name in calls)

    # The usage key is stripped from what is stored and passed downstream.
    summary = step(workflow, "summaries[gpt-4o-mini]").result_value()
    assert set(summary) == {"model", "summary"} and summary["model"] == "gpt-4o-mini"
    brief = step(workflow, "compile_brief").result_value()
    assert brief["missing"] == []
    assert brief["markdown"].startswith("# Research brief: Air-source heat pumps")
    assert "**Keywords:** heat, homes" in brief["markdown"]
    assert "Two winters of air-source heat pumps in northern homes" in brief["markdown"]
    assert "credibility high" in brief["markdown"] and "credibility low" in brief["markdown"]


def test_synthesis_sees_the_three_summaries_keyed_by_model():
    workflow = run(build_research_brief(debug=True))

    assert_completed(workflow)
    summaries = {
        model: step(workflow, f"summaries[{model}]").result_value() for model in SUMMARY_MODELS
    }
    synthesis = step(workflow, "summaries_synthesis")
    assert synthesis.result_value()["based_on"] == sorted(SUMMARY_MODELS)
    assert synthesis.result_value()["model"] == SYNTHESIS_MODEL
    # Debug capture: what it read upstream (keyed by model), its request and response.
    records = {r.kind: r for r in DebugRecord.objects.filter(step=synthesis)}
    assert set(records) == {"upstream_context", "request", "response"}
    assert records["upstream_context"].payload == summaries
    request = records["request"].payload
    assert request["model"] == SYNTHESIS_MODEL
    assert request["system"] == SYNTHESIS_SYSTEM.format(topic=DEFAULT_TOPIC)
    for model in SUMMARY_MODELS:
        assert f"[{model}]\n{summaries[model]['summary']}" in request["prompt"]
    assert records["response"].request_id == records["request"].pk
    # The fake provider is deterministic: the same request gives the same answer.
    again = asyncio.run(providers.complete(**request))
    assert records["response"].payload == again
    assert synthesis.result_value()["synthesis"] == providers.text_of(again)
    # Only the synthesis step captures.
    assert set(DebugRecord.objects.filter(workflow=workflow).values_list("step", flat=True)) == {
        synthesis.pk
    }


def test_a_tiny_budget_stops_later_llm_steps_while_plain_steps_run():
    """One worker slot: the first summary spends more than the whole budget, so every
    LLM step claimed after it is discarded without calling a model."""
    budget = Decimal("0.000001")
    workflow = run(build_research_brief(budget_usd=budget), concurrency=1)

    assert workflow.state == "failed"
    states = step_states(workflow)
    assert all(states[name] == "completed" for name in PLAIN_STEPS), states
    summaries = [step(workflow, name) for name in SUMMARIES]
    completed = [s for s in summaries if s.state == "completed"]
    stopped = [s for s in summaries if s.state == "discarded"]
    assert len(completed) == 1 and len(stopped) == 2, states
    for s in stopped:
        assert s.reason == "budget exceeded" and s.last_error == ""
        assert not LLMUsage.objects.filter(step=s).exists()  # no model was called
    synthesis = step(workflow, "summaries_synthesis")
    assert synthesis.state == "cancelled" and synthesis.reason.startswith("dep summaries[")
    # The tagger's calls are unpriced: it ran only if it came before the first summary.
    keywords = step(workflow, "keywords")
    assert (keywords.state, keywords.reason) in {
        ("completed", ""),
        ("discarded", "budget exceeded"),
    }
    assert {
        s.queue for s in WorkflowStep.objects.filter(workflow=workflow, reason="budget exceeded")
    } == {"llm"}

    # The reason names what was spent when the budget stopped the first step: with one
    # worker slot nothing was in flight then, so that is all that was spent.
    match = re.fullmatch(r"budget exceeded: spent \$(\S+) of a \$(\S+) budget", workflow.reason)
    assert match, workflow.reason
    assert Decimal(match[1]) == workflow.cost_usd == ledger_cost(workflow) == completed[0].cost_usd
    assert Decimal(match[2]) == budget
    # compile_brief accepts missing parts, and says which.
    brief = step(workflow, "compile_brief").result_value()
    assert "summaries_synthesis" in brief["missing"]
    assert "_No synthesis" in brief["markdown"]


def test_research_brief_command_inserts_a_runnable_workflow(capsys):
    call_command("research_brief", "--budget", "0.05")

    workflow = Workflow.objects.get()
    out = capsys.readouterr().out
    assert f"Inserted research_brief workflow {workflow.pk} (8 steps, budget $0.05)" in out
    assert workflow.budget_usd == Decimal("0.05")
    workflow = run(workflow)
    assert_completed(workflow)


def test_research_brief_command_budget_option():
    call_command("research_brief", "--budget", "none", "--debug")
    workflow = Workflow.objects.get()
    assert workflow.budget_usd is None and workflow.debug
    for bad in ("cheap", "-1", "NaN"):
        with pytest.raises(CommandError, match="--budget"):
            call_command("research_brief", "--budget", bad)


# -------------------------------------------------------------------- the fake provider
def test_fake_provider_is_deterministic_and_shaped_like_the_vendors():
    prompt = "Heat pumps kept homes warm in the cold. " * 3 + "Installers matter a lot here."
    pricing = DefaultPricing()
    for model in [*SUMMARY_MODELS, SYNTHESIS_MODEL, KEYWORD_MODEL]:
        assert 0.2 <= providers.latency_of(model) <= 1.0
        first = asyncio.run(providers.complete(model, prompt, system="Summarise."))
        assert asyncio.run(providers.complete(model, prompt, system="Summarise.")) == first
        text = providers.text_of(first)
        # Extractive: every sentence of the answer comes from the prompt.
        assert text and all(part.rstrip(".") in prompt for part in text.split(". "))
        usage = providers.usage_of(first)
        assert usage.model == model
        assert usage.input_tokens == providers.count_tokens("Summarise.") + providers.count_tokens(
            prompt
        )
        assert usage.output_tokens == (len(text) + 3) // 4
        cost = pricing.cost(usage)
        if model == KEYWORD_MODEL:
            assert cost is None
        else:
            assert isinstance(cost, Decimal) and cost > 0
    claude = asyncio.run(providers.complete("claude-3-5-haiku-latest", prompt))
    assert claude["type"] == "message" and providers.usage_of(claude).provider == "anthropic"
    gemini = asyncio.run(providers.complete("gemini-1.5-flash", prompt))
    assert gemini["object"] == "chat.completion"
    assert providers.usage_of(gemini).provider == "google"  # usage_from alone says "openai"


def test_fake_provider_rate_limit_and_timeout():
    with pytest.raises(providers.ProviderRateLimited) as caught:
        asyncio.run(providers.complete("gpt-4o-mini", "hello", busy=True))
    assert retry_after_hint(caught.value) == 0.5  # the retry-after-ms header, read by baton
    with pytest.raises(TimeoutError):
        asyncio.run(providers.complete("gpt-4o-mini", "hello", timeout=0.01))
