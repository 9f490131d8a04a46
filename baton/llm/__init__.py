"""baton's LLM layer: LLMStep, the usage ledger, pricing, stats, debug capture and
multi-model helpers. The engine knows of it only through the calls an attempt carries.

    usage.py        Usage and usage_from(response): token counts from SDK objects
    hints.py        RateLimited and retry-after hints of SDK exceptions
    ledger.py       the calls of one attempt, priced, as the engine stores them
    pricing.py      DefaultPricing (genai-prices) and the BATON["PRICING"] hook
    step.py         LLMStep: queue, attempts, backoff, timeout, rate limits, budget
    stats.py        totals per workflow, step and model (ORM aggregates)
    debug.py        request / response / upstream context capture for debug workflows
    multi_model.py  model_for(job, default)
"""

from typing import TYPE_CHECKING, Any

from baton.llm.hints import RateLimited, retry_after_hint
from baton.llm.multi_model import model_for
from baton.llm.usage import Usage, usage_from

if TYPE_CHECKING:
    from baton.llm.step import LLMStep

__all__ = ["LLMStep", "RateLimited", "Usage", "model_for", "retry_after_hint", "usage_from"]


def __getattr__(name: str) -> Any:
    # LLMStep imports the models: loaded on first use, so that `import baton.llm` works
    # before the apps are ready.
    if name == "LLMStep":
        from baton.llm.step import LLMStep  # app loading: see above

        return LLMStep
    raise AttributeError(f"module 'baton.llm' has no attribute {name!r}")
