"""A fake model provider for the research-brief demo: offline, free and deterministic.

``complete(model, prompt, ...)`` waits a short latency that is fixed per model (0.2 to
1.0 s, so a person can watch the steps run), then answers with text taken from the
prompt (an extractive summary, or a keyword list when the system prompt asks for
keywords) and a plausible token count (about one token per four characters). Same
model, same prompt: same answer.

The answer is a plain dict shaped like the vendor's JSON, so ``baton.llm.usage_from``
reads it as it reads the real SDKs' objects: an Anthropic message for ``claude-*``
models, an OpenAI chat completion for every other model (as Google and most other
vendors serve over their OpenAI-compatible endpoints).

``openai_adapter.py`` next to this module has the same ``complete`` on the real OpenAI
SDK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import zlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

from baton.llm import Usage, usage_from

MIN_LATENCY = 0.2
MAX_LATENCY = 1.0

# Who serves a model, by its name: the provider genai-prices looks the price up under.
_VENDORS = (("claude-", "anthropic"), ("gemini-", "google"), ("gpt-", "openai"))

# How many sentences each model family keeps in a summary: their "styles" differ.
_SENTENCES = {"gpt-4o-mini": 3, "claude": 4, "gemini": 2, "gpt-4o": 4}

_STOPWORDS = frozenset(
    """
    about above after again against also among and another are around because been
    before being below between both but can could did does doing down during each
    every from further had has have having her here hers him his how into its itself
    just least less more most much must near need next nine not now off once one only
    other ought our ours out over own per same say says said she should since some
    still such than that the their theirs them then there these they this those three
    through too two under until upon very was were what when where which while who
    whom why will with within without would year years you your yours
    """.split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def vendor_of(model: str) -> str | None:
    """The provider that serves ``model`` ("openai", "anthropic", "google"), if known."""
    for prefix, vendor in _VENDORS:
        if model.startswith(prefix):
            return vendor
    return None


def latency_of(model: str) -> float:
    """Seconds a call to ``model`` takes: fixed per model, from 0.2 to 1.0."""
    steps = round((MAX_LATENCY - MIN_LATENCY) * 100) + 1
    return round(MIN_LATENCY + (zlib.crc32(model.encode()) % steps) / 100, 2)


def count_tokens(text: str) -> int:
    """About one token per four characters, as for English text."""
    return (len(text) + 3) // 4


class ProviderRateLimited(Exception):
    """What a vendor SDK raises for an HTTP 429: the response and its headers.

    baton reads the ``retry-after-ms`` header by duck typing (``exc.response.headers``),
    as it does for the openai and anthropic SDKs' ``RateLimitError``.
    """

    status_code = 429

    def __init__(self, model: str, retry_after_ms: int) -> None:
        super().__init__(f"{model}: rate limited, retry after {retry_after_ms} ms")
        self.response = _Response(status_code=429, headers={"retry-after-ms": str(retry_after_ms)})


@dataclasses.dataclass(frozen=True)
class _Response:
    status_code: int
    headers: Mapping[str, str]


async def complete(
    model: str,
    prompt: str,
    *,
    system: str = "",
    max_tokens: int = 256,
    timeout: float | None = None,
    busy: bool = False,
) -> dict[str, Any]:
    """Answer ``prompt`` as ``model`` would, after the model's latency.

    ``timeout`` (seconds, such as ``job.time_left()``) is honoured like an SDK's: a call
    that would take longer raises TimeoutError when it runs out. ``busy`` makes the call
    fail as rate limited (``ProviderRateLimited``, retry after 500 ms).
    """
    if busy:
        await asyncio.sleep(0.05)
        raise ProviderRateLimited(model, retry_after_ms=500)
    delay = latency_of(model)
    if timeout is not None and delay > timeout:
        await asyncio.sleep(timeout)
        raise TimeoutError(f"{model}: no answer within {timeout:.1f} s")
    await asyncio.sleep(delay)
    text = _answer(model, system, prompt, max_tokens)
    input_tokens = count_tokens(system) + count_tokens(prompt)
    output_tokens = count_tokens(text)
    call_id = f"{zlib.crc32(f'{model}|{system}|{prompt}'.encode()):08x}"
    if vendor_of(model) == "anthropic":
        return _anthropic_message(call_id, model, text, input_tokens, output_tokens)
    return _openai_chat_completion(call_id, model, text, input_tokens, output_tokens)


def text_of(response: Any) -> str:
    """The answer's text, from an OpenAI chat completion or an Anthropic message (dicts,
    as ``complete`` returns them, or the SDKs' objects)."""
    choices = _field(response, "choices")
    if choices:
        return str(_field(_field(choices[0], "message"), "content") or "")
    blocks = _field(response, "content") or []
    return "".join(str(_field(b, "text")) for b in blocks if _field(b, "type") == "text")


def usage_of(response: Any) -> Usage:
    """``baton.llm.usage_from(response)``, with the provider put right.

    ``usage_from`` names the provider after the response's shape, so every chat
    completion is ``"openai"``; a Gemini model answering in that shape would then be
    looked up among OpenAI's prices and go unpriced. Its vendor is named instead.
    """
    usage = usage_from(response)
    vendor = vendor_of(usage.model)
    if vendor is None or vendor == usage.provider:
        return usage
    return usage_from(response, provider=vendor)


# ------------------------------------------------------------------------- the answers
def _answer(model: str, system: str, prompt: str, max_tokens: int) -> str:
    if "keyword" in system.lower():
        text = ", ".join(keywords(_body(prompt), 8))
    else:
        text = _extract(model, prompt)
    limit = max_tokens * 4
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return text


def keywords(text: str, count: int) -> list[str]:
    """The ``count`` most frequent content words of ``text`` (ties: alphabetical)."""
    counts = Counter(_words(text))
    return [word for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:count]


def _words(text: str) -> list[str]:
    words = (w.lower().strip("-") for w in _WORD.findall(text))
    return [w for w in words if len(w) > 3 and w not in _STOPWORDS]


def _body(prompt: str) -> str:
    """The prompt without its label lines ("Source: ...", "[model]", "# ...")."""
    return "\n".join(
        line
        for line in prompt.splitlines()
        if line.strip() and not line.startswith(("#", "[", "Source:"))
    )


def _extract(model: str, prompt: str) -> str:
    """The prompt's most representative sentences, in their order: those whose words
    recur across the prompt, each model weighing them a little differently."""
    sentences = [
        sentence.strip()
        for line in _body(prompt).splitlines()
        for sentence in _SENTENCE_END.split(line.strip())
        if len(sentence.split()) >= 5
    ]
    if not sentences:
        return "The sources say too little to summarise."
    frequency = Counter(_words(_body(prompt)))

    def score(item: tuple[int, str]) -> float:
        _, sentence = item
        words = _words(sentence)
        if not words:
            return 0.0
        weight = sum(frequency[w] for w in words) / len(words)
        # The model's own slant: up to 50% more or less for any one sentence.
        slant = zlib.crc32(f"{model}|{sentence}".encode()) % 1000 / 1000
        return weight * (0.5 + slant)

    family = model if model in _SENTENCES else model.split("-")[0]
    keep = _SENTENCES.get(family, 3)
    chosen = sorted(sorted(enumerate(sentences), key=score, reverse=True)[:keep])
    return " ".join(sentence for _, sentence in chosen)


# -------------------------------------------------------------------- response shapes
def _openai_chat_completion(
    call_id: str, model: str, text: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{call_id}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def _anthropic_message(
    call_id: str, model: str, text: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"msg_{call_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
