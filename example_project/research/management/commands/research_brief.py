from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError, CommandParser

from example_project.research.tasks import (
    DEFAULT_BUDGET_USD,
    SUMMARY_MODELS,
    build_research_brief,
)


def _budget(value: str) -> Decimal | None:
    if value.lower() == "none":
        return None
    try:
        budget = Decimal(value)
    except InvalidOperation:
        raise CommandError(
            f"--budget must be a number of US dollars or 'none', got {value!r}"
        ) from None
    if not budget.is_finite() or budget < 0:
        raise CommandError(f"--budget must be a number >= 0, got {value!r}")
    return budget


class Command(BaseCommand):
    help = (
        "Insert the research-brief workflow: fetch_sources -> summaries[3 models] -> "
        "summaries_synthesis, keywords, credibility -> compile_brief. Its LLM steps run "
        "on the 'llm' queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--budget",
            default=str(DEFAULT_BUDGET_USD),
            help=f"budget in US dollars, or 'none' (default {DEFAULT_BUDGET_USD}); "
            "try 0.001 to see the budget stop the synthesis",
        )
        parser.add_argument("--topic", default=None, help="the brief's topic (a label only)")
        parser.add_argument(
            "--debug", action="store_true", help="capture the synthesis step's model call"
        )
        parser.add_argument(
            "--rate-limit",
            metavar="MODEL",
            choices=SUMMARY_MODELS,
            default=None,
            help="this summary model refuses its first call (shows a snooze)",
        )

    def handle(self, *args, budget: str, topic, debug: bool, rate_limit, **options) -> None:
        budget_usd = _budget(budget)
        kwargs = {} if topic is None else {"topic": topic}
        workflow = build_research_brief(
            budget_usd=budget_usd, debug=debug, rate_limited_model=rate_limit, **kwargs
        )
        limit = "no budget" if budget_usd is None else f"budget ${budget_usd}"
        self.stdout.write(
            f"Inserted research_brief workflow {workflow.id} ({workflow.step_count} steps, "
            f"{limit}{', debug capture' if debug else ''})"
        )
