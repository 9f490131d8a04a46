"""retry_after_hint on the SDKs' own rate-limit exceptions, and RateLimited."""

from __future__ import annotations

import email.utils
import math
import pickle
import time
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="retry_after_hint is tested on openai's errors")
anthropic = pytest.importorskip(
    "anthropic", reason="retry_after_hint is tested on anthropic's errors"
)
# The installed SDKs build their errors on httpx2 (httpx's successor); older ones on httpx.
try:
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx", reason="the SDKs' errors need an httpx response")

from baton.llm.hints import MAX_RETRY_AFTER, RateLimited, retry_after_hint  # noqa: E402


def openai_error(headers: dict[str, str]) -> Any:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    response = httpx.Response(429, headers=headers, request=request)
    return openai.RateLimitError("Rate limit reached", response=response, body=None)


def anthropic_error(headers: dict[str, str]) -> Any:
    request = httpx.Request("POST", "https://api.anthropic.com/v1/messages")
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    response = httpx.Response(429, headers=headers, json=body, request=request)
    return anthropic.RateLimitError("Slow down", response=response, body=body)


SDK_ERRORS = pytest.mark.parametrize(
    "make", [openai_error, anthropic_error], ids=["openai", "anthropic"]
)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


class WithHeaders(Exception):
    def __init__(self, headers: Any) -> None:
        super().__init__("boom")
        self.headers = headers


class WithRetryAfter(Exception):
    def __init__(self, retry_after: Any) -> None:
        super().__init__("boom")
        self.retry_after = retry_after


# The SDKs' errors.


@SDK_ERRORS
def test_retry_after_seconds(make: Any) -> None:
    assert retry_after_hint(make({"retry-after": "20"})) == 20.0


@SDK_ERRORS
def test_retry_after_ms_wins_over_retry_after(make: Any) -> None:
    assert retry_after_hint(make({"retry-after": "20", "retry-after-ms": "1500"})) == 1.5


@SDK_ERRORS
def test_header_names_are_case_insensitive(make: Any) -> None:
    assert retry_after_hint(make({"Retry-After": "7"})) == 7.0


@SDK_ERRORS
def test_http_date(make: Any) -> None:
    hint = retry_after_hint(make({"retry-after": http_date(120)}))
    assert hint is not None
    # formatdate drops the fraction of a second, and the test takes a little time.
    assert 115 <= hint <= 120


@SDK_ERRORS
def test_http_date_in_the_past_is_zero(make: Any) -> None:
    assert retry_after_hint(make({"retry-after": http_date(-600)})) == 0.0


@SDK_ERRORS
@pytest.mark.parametrize("value", ["soon", "", "0x10", "Sun, 99 Foo 2025 99:99:99 GMT"])
def test_garbage_header_is_none(make: Any, value: str) -> None:
    assert retry_after_hint(make({"retry-after": value})) is None


@SDK_ERRORS
@pytest.mark.parametrize("value", ["-5", "nan", "inf", "-inf", "1e400"])
def test_negative_or_non_finite_is_none(make: Any, value: str) -> None:
    assert retry_after_hint(make({"retry-after": value})) is None


@SDK_ERRORS
def test_unusable_retry_after_ms_falls_back_to_retry_after(make: Any) -> None:
    assert retry_after_hint(make({"retry-after-ms": "nan", "retry-after": "3"})) == 3.0
    assert retry_after_hint(make({"retry-after-ms": "-1", "retry-after": "4"})) == 4.0


@SDK_ERRORS
def test_clamped(make: Any) -> None:
    assert retry_after_hint(make({"retry-after": "86400"})) == MAX_RETRY_AFTER
    assert retry_after_hint(make({"retry-after-ms": "7200000"})) == MAX_RETRY_AFTER
    assert retry_after_hint(make({"retry-after": http_date(7 * 86400)})) == MAX_RETRY_AFTER


@SDK_ERRORS
def test_no_header_is_none(make: Any) -> None:
    assert retry_after_hint(make({})) is None


def test_connection_error_without_response_is_none() -> None:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    assert retry_after_hint(openai.APIConnectionError(request=request)) is None


# Other exceptions.


def test_plain_dict_headers_any_case() -> None:
    assert retry_after_hint(WithHeaders({"Retry-After-Ms": "250"})) == 0.25
    assert retry_after_hint(WithHeaders({"RETRY-AFTER": "9"})) == 9.0
    assert retry_after_hint(WithHeaders({b"retry-after": b"2"})) == 2.0


def test_response_headers_win_over_exception_headers() -> None:
    exc = WithHeaders({"retry-after": "9"})
    exc.response = type("R", (), {"headers": {"retry-after": "4"}})()  # type: ignore[attr-defined]
    assert retry_after_hint(exc) == 4.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12.0), (0.5, 0.5), ("30", 30.0), (-1, None), (math.nan, None), (math.inf, None)],
)
def test_retry_after_attribute(value: Any, expected: float | None) -> None:
    assert retry_after_hint(WithRetryAfter(value)) == expected


def test_retry_after_attribute_is_clamped() -> None:
    assert retry_after_hint(WithRetryAfter(10**6)) == MAX_RETRY_AFTER


@pytest.mark.parametrize("value", [True, None, object(), [5]])
def test_retry_after_attribute_not_a_number_is_none(value: Any) -> None:
    assert retry_after_hint(WithRetryAfter(value)) is None


def test_plain_exception_is_none() -> None:
    assert retry_after_hint(ValueError("nope")) is None


def test_never_raises() -> None:
    class Hostile(Exception):
        @property
        def response(self) -> Any:
            raise RuntimeError("no response for you")

    class BadHeaders(Exception):
        headers = 42

    assert retry_after_hint(Hostile()) is None
    assert retry_after_hint(BadHeaders()) is None


# RateLimited.


def test_rate_limited() -> None:
    exc = RateLimited(2, "quota of the day")
    assert exc.retry_after == 2.0
    assert isinstance(exc.retry_after, float)
    assert str(exc) == "quota of the day"
    assert retry_after_hint(exc) == 2.0
    assert str(RateLimited(0)) == "rate limited"


def test_rate_limited_hint_is_clamped() -> None:
    exc = RateLimited(5000)
    assert exc.retry_after == 5000.0
    assert retry_after_hint(exc) == MAX_RETRY_AFTER


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf, "5", None, True, 10**400])
def test_rate_limited_rejects_bad_retry_after(bad: Any) -> None:
    with pytest.raises(ValueError, match="retry_after must be a finite number of seconds >= 0"):
        RateLimited(bad)


def test_rate_limited_survives_pickling() -> None:
    copy = pickle.loads(pickle.dumps(RateLimited(1.5, "later")))
    assert isinstance(copy, RateLimited)
    assert (copy.retry_after, str(copy)) == (1.5, "later")
