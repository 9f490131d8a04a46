"""One model call's token usage: the record the ledger stores and pricing reads.

Pure Python: no Django, no SDK imports. ``usage_from`` reads the SDKs' response objects by
their attributes (duck typing), so neither openai nor anthropic is a dependency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

MAX_MODEL_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class Usage:
    """Tokens of one model call, by kind.

    ``input_tokens`` counts every input token, cached ones included (the convention of
    OpenAI's ``prompt_tokens`` and of genai-prices): ``cache_read_tokens`` and
    ``cache_write_tokens`` say how many of them were read from or written to the
    provider's prompt cache. ``usage_from`` converts Anthropic's convention (whose
    ``input_tokens`` leaves the cached ones out) to this one.
    """

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    provider: str | None = None
    latency_ms: int | None = None

    def __post_init__(self) -> None:
        problems = usage_problems(self)
        if problems:
            raise ValueError("invalid usage: " + "; ".join(problems))


def usage_problems(usage: Usage) -> list[str]:
    """What is wrong with a usage record, as sentences; empty when it is valid."""
    problems = []
    if not isinstance(usage.model, str) or not usage.model.strip():
        problems.append(f"model must be a non-empty string, got {usage.model!r}")
    elif len(usage.model) > MAX_MODEL_LENGTH:
        problems.append(f"model must be at most {MAX_MODEL_LENGTH} characters")
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        value = getattr(usage, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name} must be an int >= 0, got {value!r}")
    if usage.provider is not None and not isinstance(usage.provider, str):
        problems.append(f"provider must be a string or None, got {usage.provider!r}")
    latency = usage.latency_ms
    if latency is not None and (
        not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0
    ):
        problems.append(f"latency_ms must be a number >= 0 or None, got {latency!r}")
    return problems


def usage_from(response: Any, model: str | None = None, *, provider: str | None = None) -> Usage:
    """The usage of an OpenAI (chat completions or responses) object, an Anthropic
    message, or a plain dict; ``model`` overrides the model the response names.

    The provider is the one whose API the response's shape is (``"openai"``,
    ``"anthropic"``); ``provider`` overrides it, for a model served through another
    provider's compatible API (Gemini or a local model behind an OpenAI-style endpoint):
    pricing looks the model up in that provider's table.

    Accepted: an OpenAI ``ChatCompletion`` (or the final ``ChatCompletionChunk`` of a stream
    with usage), an OpenAI Responses ``Response``, an Anthropic ``Message``, a ``Usage``, a
    dict of ``Usage``'s fields, or a dict of any of those responses' JSON (``model_dump()``
    or the HTTP body). Raises TypeError for anything else, ValueError when the response
    has no usage or no model (and ``model`` is not given) or a count is not an int >= 0.
    """
    usage = _usage_from(response, model)
    if provider is not None and provider != usage.provider:
        return dataclasses.replace(usage, provider=provider)
    return usage


def _usage_from(response: Any, model: str | None) -> Usage:
    if isinstance(response, Usage):
        return response if model is None else dataclasses.replace(response, model=model)
    if isinstance(response, Mapping) and "usage" not in response:
        return _from_fields(response, model)

    usage = _get(response, "usage")
    if usage is _MISSING:
        raise TypeError(_unrecognised(response))
    kind = _kind(response, usage)
    if usage is None:
        what = "response" if kind is None else _KIND_NAMES[kind]
        raise ValueError(f"the {what} has no usage (usage is None)")
    if kind is None:
        raise TypeError(_unrecognised(response))

    name = _model_name(response, model, _KIND_NAMES[kind])
    if kind == "openai_chat":
        details = _get(usage, "prompt_tokens_details")
        return Usage(
            model=name,
            input_tokens=_count(usage, "prompt_tokens", "usage", required=True),
            output_tokens=_count(usage, "completion_tokens", "usage", required=True),
            cache_read_tokens=_count(details, "cached_tokens", "usage.prompt_tokens_details"),
            cache_write_tokens=_count(details, "cache_write_tokens", "usage.prompt_tokens_details"),
            provider="openai",
        )
    if kind == "openai_responses":
        details = _get(usage, "input_tokens_details")
        return Usage(
            model=name,
            input_tokens=_count(usage, "input_tokens", "usage", required=True),
            output_tokens=_count(usage, "output_tokens", "usage", required=True),
            cache_read_tokens=_count(details, "cached_tokens", "usage.input_tokens_details"),
            cache_write_tokens=_count(details, "cache_write_tokens", "usage.input_tokens_details"),
            provider="openai",
        )
    # Anthropic's input_tokens leaves out the cached tokens: add them back, so input_tokens
    # counts every input token as the Usage convention wants.
    uncached = _count(usage, "input_tokens", "usage", required=True)
    cache_read = _count(usage, "cache_read_input_tokens", "usage")
    cache_write = _count(usage, "cache_creation_input_tokens", "usage")
    return Usage(
        model=name,
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=_count(usage, "output_tokens", "usage", required=True),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        provider="anthropic",
    )


# Tells "absent" from "present but None": the SDKs' optional fields are None, not absent.
_MISSING: Any = object()

_USAGE_FIELDS = frozenset(field.name for field in dataclasses.fields(Usage))

_KIND_NAMES = {
    "openai_chat": "OpenAI chat completion",
    "openai_responses": "OpenAI response",
    "anthropic": "Anthropic message",
}

_ACCEPTED = (
    "an OpenAI ChatCompletion or Responses Response, an Anthropic Message, a Usage, "
    "or a dict of Usage's fields or of one of those responses' JSON"
)


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK object or of its JSON dict; _MISSING when there is none."""
    if obj is None:
        return _MISSING
    if isinstance(obj, Mapping):
        return obj.get(name, _MISSING)
    return getattr(obj, name, _MISSING)


def _has(obj: Any, name: str) -> bool:
    return _get(obj, name) is not _MISSING


def _kind(response: Any, usage: Any) -> str | None:
    """Which provider shape ``response`` is: its own type tag first, then its usage's fields."""
    tag = _get(response, "object")
    if tag in ("chat.completion", "chat.completion.chunk"):
        return "openai_chat"
    if tag == "response":
        return "openai_responses"
    if _get(response, "type") == "message":
        return "anthropic"
    # No tag (a model_construct'ed object, a hand-written dict): the usage fields still
    # tell the three apart, as each provider names its counts differently.
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        return "openai_chat"
    if _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
        return "anthropic"
    if _has(usage, "input_tokens_details") or _has(usage, "output_tokens_details"):
        return "openai_responses"
    return None


def _count(obj: Any, name: str, where: str, *, required: bool = False) -> int:
    """A token count; absent or None is 0, unless ``required`` and absent."""
    value = _get(obj, name)
    if value is _MISSING:
        if required:
            raise TypeError(f"{where} has no {name}: not the usage of a known response shape")
        return 0
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}.{name} must be an int >= 0 or None, got {value!r}")
    return value


def _model_name(response: Any, model: str | None, kind_name: str) -> str:
    if model is not None:
        return model
    name = _get(response, "model")
    if name is _MISSING or name is None or name == "":
        raise ValueError(f"the {kind_name} names no model: pass model=")
    if not isinstance(name, str):
        raise ValueError(f"the {kind_name}'s model must be a string, got {name!r}")
    return name


def _from_fields(fields: Mapping[Any, Any], model: str | None) -> Usage:
    """A Usage from a dict of its own field names (such as ``dataclasses.asdict``)."""
    unknown = [key for key in fields if key not in _USAGE_FIELDS]
    if unknown or not fields:
        raise TypeError(_unrecognised(fields))
    values = dict(fields)
    if model is not None:
        values["model"] = model
    elif values.get("model") in (None, ""):
        raise ValueError("the usage dict names no model: pass model= or a 'model' key")
    return Usage(**values)


def _unrecognised(response: Any) -> str:
    if isinstance(response, Mapping):
        keys = sorted(str(key) for key in response)
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        given = f"a dict with keys [{shown}]"
    else:
        given = f"a {type(response).__module__}.{type(response).__qualname__}"
    return f"usage_from accepts {_ACCEPTED}; got {given}"
