"""usage_from on the SDKs' own response types, their JSON, and Usage's own dicts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="usage_from is tested on the openai SDK's types")
anthropic = pytest.importorskip(
    "anthropic", reason="usage_from is tested on the anthropic SDK's types"
)

from anthropic.types import Message  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402
from openai.types.responses import Response  # noqa: E402

from baton.llm.usage import Usage, usage_from  # noqa: E402

CHAT_JSON: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

RESPONSES_JSON: dict[str, Any] = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
    "object": "response",
    "created_at": 1741476777,
    "status": "completed",
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 3280,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 2048},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 16},
        "total_tokens": 3332,
    },
}

ANTHROPIC_JSON: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "output_tokens": 70,
    },
}


def chat() -> Any:
    return ChatCompletion.model_validate(CHAT_JSON)


def responses() -> Any:
    return Response.model_validate(RESPONSES_JSON)


def message() -> Any:
    return Message.model_validate(ANTHROPIC_JSON)


def with_usage(data: dict[str, Any], **usage: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with some usage fields replaced."""
    copy: dict[str, Any] = json.loads(json.dumps(data))
    copy["usage"].update(usage)
    return copy


# The three shapes, as SDK objects.


def test_openai_chat_completion() -> None:
    assert usage_from(chat()) == Usage(
        model="gpt-4o-2024-08-06",
        input_tokens=2006,
        output_tokens=300,
        cache_read_tokens=1920,
        cache_write_tokens=0,
        provider="openai",
    )


def test_openai_chat_cache_write_tokens() -> None:
    data = with_usage(
        CHAT_JSON, prompt_tokens_details={"cached_tokens": 0, "cache_write_tokens": 7}
    )
    usage = usage_from(ChatCompletion.model_validate(data))
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (0, 7)


def test_openai_chat_without_details() -> None:
    data = with_usage(CHAT_JSON, prompt_tokens_details=None, completion_tokens_details=None)
    usage = usage_from(ChatCompletion.model_validate(data))
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (2006, 300, 0)


def test_openai_stream_chunk_with_usage() -> None:
    # The last chunk of a stream with stream_options={"include_usage": True}.
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }
    )
    usage = usage_from(chunk)
    assert (usage.model, usage.input_tokens, usage.output_tokens) == ("gpt-4o-mini", 11, 5)
    assert usage.provider == "openai"


def test_openai_responses() -> None:
    assert usage_from(responses()) == Usage(
        model="gpt-4.1-2025-04-14",
        input_tokens=3280,
        output_tokens=52,
        cache_read_tokens=1024,
        cache_write_tokens=2048,
        provider="openai",
    )


def test_anthropic_message_adds_the_cached_tokens_to_input() -> None:
    assert usage_from(message()) == Usage(
        model="claude-sonnet-4-5-20250929",
        input_tokens=50 + 2000 + 1000,
        output_tokens=70,
        cache_read_tokens=2000,
        cache_write_tokens=1000,
        provider="anthropic",
    )


def test_anthropic_message_with_null_cache_fields() -> None:
    data = with_usage(
        ANTHROPIC_JSON, cache_creation_input_tokens=None, cache_read_input_tokens=None
    )
    usage = usage_from(Message.model_validate(data))
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (50, 0, 0)
    assert usage.provider == "anthropic"


def test_anthropic_message_built_with_the_sdk_usage_type() -> None:
    sdk_usage = anthropic.types.Usage(
        input_tokens=3, output_tokens=4, cache_read_input_tokens=5, cache_creation_input_tokens=6
    )
    msg = Message(
        id="msg_1",
        type="message",
        role="assistant",
        model="claude-haiku-4-5",
        content=[],
        stop_reason="end_turn",
        stop_sequence=None,
        usage=sdk_usage,
    )
    usage = usage_from(msg)
    assert (usage.input_tokens, usage.output_tokens) == (14, 4)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (5, 6)


# The same shapes as JSON dicts: model_dump() and the raw HTTP body.


@pytest.mark.parametrize("build", [chat, responses, message], ids=["chat", "responses", "message"])
def test_model_dump_reads_as_the_object(build: Any) -> None:
    obj = build()
    assert usage_from(obj.model_dump()) == usage_from(obj)
    assert usage_from(obj.model_dump(exclude_none=True)) == usage_from(obj)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (CHAT_JSON, ("openai", 2006, 300, 1920, 0)),
        (RESPONSES_JSON, ("openai", 3280, 52, 1024, 2048)),
        (ANTHROPIC_JSON, ("anthropic", 3050, 70, 2000, 1000)),
    ],
    ids=["chat", "responses", "message"],
)
def test_http_json(data: dict[str, Any], expected: tuple[Any, ...]) -> None:
    usage = usage_from(json.loads(json.dumps(data)))
    assert (
        usage.provider,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    ) == expected


@pytest.mark.parametrize(
    ("data", "provider", "input_tokens"),
    [
        (CHAT_JSON, "openai", 2006),
        (RESPONSES_JSON, "openai", 3280),
        (ANTHROPIC_JSON, "anthropic", 3050),
    ],
    ids=["chat", "responses", "message"],
)
def test_untagged_json_is_told_apart_by_its_usage_fields(
    data: dict[str, Any], provider: str, input_tokens: int
) -> None:
    # Without "object"/"type" (a hand-written or proxied body), the usage field names decide.
    untagged = {key: value for key, value in data.items() if key not in ("object", "type")}
    usage = usage_from(untagged)
    assert (usage.provider, usage.input_tokens) == (provider, input_tokens)


def test_model_construct_without_tags() -> None:
    obj = ChatCompletion.model_construct(
        model="gpt-4o", usage={"prompt_tokens": 9, "completion_tokens": 2}
    )
    assert usage_from(obj) == Usage(
        model="gpt-4o", input_tokens=9, output_tokens=2, provider="openai"
    )


# Our own dicts.


def test_dict_round_trip() -> None:
    usage = Usage(
        model="claude-opus-4-1",
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=3,
        cache_write_tokens=4,
        provider="anthropic",
        latency_ms=1234,
    )
    assert usage_from(dataclasses.asdict(usage)) == usage


def test_dict_of_some_fields_takes_the_defaults() -> None:
    assert usage_from({"model": "m", "output_tokens": 5}) == Usage(model="m", output_tokens=5)


def test_usage_passes_through() -> None:
    usage = Usage(model="m", input_tokens=1)
    assert usage_from(usage) is usage
    assert usage_from(usage, model="n") == Usage(model="n", input_tokens=1)


# model=.


@pytest.mark.parametrize(
    "response",
    [chat, responses, message, lambda: CHAT_JSON, lambda: {"model": "m", "input_tokens": 1}],
    ids=["chat", "responses", "message", "json", "fields"],
)
def test_model_overrides_the_response_model(response: Any) -> None:
    assert usage_from(response(), model="my-deployment").model == "my-deployment"


def test_response_without_model_needs_model() -> None:
    data = {key: value for key, value in CHAT_JSON.items() if key != "model"}
    with pytest.raises(ValueError, match="names no model"):
        usage_from(data)
    assert usage_from(data, model="gpt-4o").input_tokens == 2006


def test_fields_dict_without_model_needs_model() -> None:
    with pytest.raises(ValueError, match="names no model"):
        usage_from({"input_tokens": 1})
    assert usage_from({"input_tokens": 1}, model="m") == Usage(model="m", input_tokens=1)


# Errors.


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda: ChatCompletion.model_validate({**CHAT_JSON, "usage": None}), "OpenAI chat"),
        (lambda: Response.model_validate({**RESPONSES_JSON, "usage": None}), "OpenAI response"),
        (lambda: {**ANTHROPIC_JSON, "usage": None}, "Anthropic message"),
    ],
    ids=["chat", "responses", "message"],
)
def test_missing_usage_is_a_value_error(build: Any, kind: str) -> None:
    with pytest.raises(ValueError, match=f"the {kind}.* has no usage"):
        usage_from(build())


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (object(), "builtins.object"),
        ("gpt-4o", "builtins.str"),
        (None, "builtins.NoneType"),
        ({"prompt_tokens": 3}, "keys [prompt_tokens]"),
        ({"model": "m", "total_tokens": 3}, "keys [model, total_tokens]"),
        ({}, "keys []"),
    ],
)
def test_unrecognised_is_a_type_error_naming_the_shapes_and_the_input(
    given: Any, named: str
) -> None:
    with pytest.raises(TypeError) as info:
        usage_from(given)
    text = str(info.value)
    assert "ChatCompletion" in text
    assert "Anthropic Message" in text
    assert named in text


def test_usage_of_no_known_shape_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="got a dict with keys"):
        usage_from({"model": "m", "usage": {"tokens": 3}})


def test_tagged_response_with_foreign_usage_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="usage has no prompt_tokens"):
        usage_from({**CHAT_JSON, "usage": {"input_tokens": 3, "output_tokens": 4}})


@pytest.mark.parametrize("bad", [-1, "12", 1.5, True])
def test_bad_counts_are_value_errors_naming_the_field(bad: Any) -> None:
    data = with_usage(ANTHROPIC_JSON, cache_read_input_tokens=bad)
    with pytest.raises(ValueError, match=r"usage\.cache_read_input_tokens must be an int >= 0"):
        usage_from(data)


def test_bad_nested_count_names_its_path() -> None:
    data = with_usage(CHAT_JSON, prompt_tokens_details={"cached_tokens": -5})
    with pytest.raises(ValueError, match=r"usage\.prompt_tokens_details\.cached_tokens"):
        usage_from(data)


def test_bad_fields_dict_values_are_value_errors() -> None:
    with pytest.raises(ValueError, match="input_tokens must be an int >= 0"):
        usage_from({"model": "m", "input_tokens": -1})


def test_provider_overrides_the_shape_s_provider() -> None:
    chat = {
        "object": "chat.completion",
        "model": "gemini-1.5-flash",
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
    assert usage_from(chat).provider == "openai"
    served = usage_from(chat, provider="google")
    assert (served.provider, served.model, served.input_tokens) == (
        "google",
        "gemini-1.5-flash",
        10,
    )
