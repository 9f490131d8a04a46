"""Optional: ``complete()`` on the real OpenAI SDK, instead of the fake provider.

Nothing imports this module, and nothing needs the ``openai`` package unless you do. To
try the research brief against OpenAI:

1. ``pip install openai`` and set ``OPENAI_API_KEY`` in the worker's environment;
2. in ``tasks.py``, call ``openai_adapter.complete`` where the steps call
   ``providers.complete`` (``providers.text_of`` and ``providers.usage_of`` read the SDK's
   objects as they read the fake's dicts);
3. use OpenAI models only: ``SUMMARY_MODELS = ["gpt-4o-mini", "gpt-4.1-mini",
   "gpt-4.1-nano"]``, and a ``KEYWORD_MODEL`` such as ``"gpt-4.1-nano"`` (which is then
   priced).

What baton expects of a real client, and this one does:

- **No retries of its own** (``max_retries=0``): ``baton.LLMStep`` retries with full
  jitter, and a rate limit's ``retry-after`` / ``retry-after-ms`` header, which baton
  reads from ``openai.RateLimitError.response.headers``, snoozes the step without
  spending an attempt. The SDK's own retries would wait inside the attempt, against its
  timeout.
- **The attempt's deadline as the request's timeout**: pass ``timeout=job.time_left()``.
"""

from __future__ import annotations

from typing import Any


async def complete(
    model: str,
    prompt: str,
    *,
    system: str = "",
    max_tokens: int = 256,
    timeout: float | None = None,
    busy: bool = False,
) -> Any:
    """The same call as ``providers.complete``, answered by OpenAI: a ``ChatCompletion``.
    ``busy`` (the fake's simulated rate limit) is ignored: real rate limits happen."""
    from openai import AsyncOpenAI  # only when this adapter is used

    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    async with AsyncOpenAI(max_retries=0) as client:
        return await client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_completion_tokens=max_tokens,
            timeout=timeout,
        )
