"""How long a failed model call asks to wait before it is retried.

Pure Python: no SDK imports. ``retry_after_hint`` reads the OpenAI and Anthropic SDKs'
exceptions (and httpx/requests-style ones) by their attributes, and ``RateLimited`` lets our
own code raise the same hint.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from collections.abc import Mapping
from typing import Any

# A server asking for more than an hour is clamped to an hour: a retry scheduled further out
# is better decided again by the caller than trusted blindly.
MAX_RETRY_AFTER = 3600.0


class RateLimited(Exception):
    """A call was refused for now and may be retried after ``retry_after`` seconds."""

    retry_after: float
    message: str

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        seconds = _seconds(retry_after)
        if seconds is None:
            raise ValueError(
                f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}"
            )
        super().__init__(message)
        self.retry_after = seconds
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds from self.args == (message,), which would pass the message
        # as retry_after: keep both, so the exception survives pickling (worker processes).
        return (type(self), (self.retry_after, self.message))


def retry_after_hint(exc: BaseException) -> float | None:
    """The seconds ``exc`` asks to wait before a retry, at most MAX_RETRY_AFTER; None when
    it names none (or nothing usable: unparsable, NaN, infinite or negative). Never raises.

    Read, first usable wins: ``RateLimited.retry_after``; the ``retry-after-ms``
    (milliseconds) then ``retry-after`` (seconds, or an HTTP-date) header of
    ``exc.response.headers`` and then of ``exc.headers``; a ``retry_after`` attribute
    (seconds, or a header-style string).
    """
    try:
        seconds = _hint(exc)
    except Exception:
        # A hint is advice: a broken exception object must not break the retry decision.
        return None
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


def _hint(exc: BaseException) -> float | None:
    if isinstance(exc, RateLimited):
        return exc.retry_after
    response = getattr(exc, "response", None)
    for headers in (getattr(response, "headers", None), getattr(exc, "headers", None)):
        seconds = _from_headers(headers)
        if seconds is not None:
            return seconds
    value = getattr(exc, "retry_after", None)
    if isinstance(value, dt.timedelta):
        return _seconds(value.total_seconds())
    if isinstance(value, str | bytes):
        return _from_header_value(value)
    return _seconds(value)


def _from_headers(headers: Any) -> float | None:
    if headers is None:
        return None
    # retry-after-ms is the SDKs' non-standard, more precise header: it wins when usable.
    ms = _seconds(_as_number(_header(headers, "retry-after-ms")))
    if ms is not None:
        return ms / 1000.0
    value = _header(headers, "retry-after")
    return None if value is None else _from_header_value(value)


def _header(headers: Any, name: str) -> Any:
    """A header of an httpx/requests (case-insensitive) headers object or of a plain dict."""
    value = headers.get(name) if hasattr(headers, "get") else None
    if value is None and isinstance(headers, Mapping):
        for key, item in headers.items():
            if isinstance(key, str) and key.lower() == name:
                return item
            if isinstance(key, bytes) and key.lower() == name.encode():
                return item
    return value


def _from_header_value(value: str | bytes) -> float | None:
    """Seconds from a Retry-After value: a number of seconds or an HTTP-date."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    number = _as_number(text)
    if number is not None:
        return _seconds(number)
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=dt.UTC)
    # A date already past means "retry now", not a negative wait.
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _as_number(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _seconds(value: Any) -> float | None:
    """``value`` as seconds when it is a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
