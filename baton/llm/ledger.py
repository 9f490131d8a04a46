"""The usage ledger of one attempt: the calls a step made, priced, ready to store.

A step records its calls in memory (``job.record_usage``, or the ``"llm_usage"`` key of
its result); the statement that records the attempt's outcome writes them, with the
step's and the workflow's running cost (baton.execution.advance). So recording adds no
round trip to a step, and a call is stored exactly when its attempt's outcome is: a
superseded attempt stores neither. What a worker killed mid-attempt had recorded is lost
with the attempt (docs/howto/llm.md says so).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from baton.llm.pricing import price
from baton.llm.usage import Usage, usage_from

logger = logging.getLogger("baton")

MAX_CALL_KEY_LENGTH = 200
USAGE_KEY = "llm_usage"  # the result key LLMStep strips and records


@dataclasses.dataclass(frozen=True)
class Call:
    """One recorded call: its key within the attempt, its usage and its cost (None:
    the pricing does not know the model)."""

    call_key: str
    usage: Usage
    cost_usd: Decimal | None


class Ledger:
    """The calls of one attempt, once per call key. Thread-safe: a synchronous step may
    record from the threads it runs its calls in."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}
        self._unnamed = 0
        self._lock = threading.Lock()

    def record(self, usage: Usage, call_key: str | None = None) -> Call:
        """Price and keep one call; a key already recorded in this attempt keeps its first
        record (a re-recorded call never counts twice)."""
        if call_key is not None and (
            not isinstance(call_key, str) or not call_key or len(call_key) > MAX_CALL_KEY_LENGTH
        ):
            raise ValueError(
                f"call_key must be None or a non-empty string of at most "
                f"{MAX_CALL_KEY_LENGTH} characters, got {call_key!r:.80}"
            )
        with self._lock:
            if call_key is None:
                self._unnamed += 1
                call_key = f"call-{self._unnamed}"
            existing = self._calls.get(call_key)
            if existing is not None:
                return existing
        call = Call(call_key=call_key, usage=usage, cost_usd=_price(usage))
        with self._lock:
            return self._calls.setdefault(call_key, call)

    def calls(self) -> tuple[Call, ...]:
        with self._lock:
            return tuple(self._calls.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)


def _price(usage: Usage) -> Decimal | None:
    try:
        return price(usage)
    except Exception:
        # A broken pricing class must not lose the step's outcome: the call is stored
        # as unpriced (unknown), and the error is loud in the log.
        logger.exception("baton: pricing %s failed; the call is recorded as unpriced", usage.model)
        return None


def warm_up() -> None:
    """Price one call of a well-known model, so that the pricing's data is loaded."""
    try:
        _price(Usage(model="gpt-4o-mini", input_tokens=1, output_tokens=1))
    except Exception:  # a broken pricing class says so at the first real call
        logger.debug("baton: pricing warm-up failed", exc_info=True)


def usages_in(value: Any) -> list[Usage]:
    """The usage records a result's ``"llm_usage"`` value holds: one record (a Usage or a
    dict) or a list of them."""
    items: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
    usages = []
    for item in items:
        if isinstance(item, Usage):
            usages.append(item)
        elif isinstance(item, Mapping):
            usages.append(usage_from(dict(item)))
        else:
            raise TypeError(
                f"{USAGE_KEY!r} must be a baton.llm.Usage, a dict, or a list of them; "
                f"got {type(item).__name__}"
            )
    return usages


@dataclasses.dataclass(frozen=True)
class Totals:
    """What an attempt's calls add to the step's and the workflow's running totals."""

    cost_usd: Decimal | None  # None: nothing priced
    unpriced_calls: int

    @classmethod
    def of(cls, calls: Iterable[Call]) -> Totals:
        calls = tuple(calls)
        priced = [call.cost_usd for call in calls if call.cost_usd is not None]
        unpriced = sum(1 for call in calls if call.cost_usd is None)
        return cls(sum(priced, Decimal(0)) if priced else None, unpriced)


def calls_json(calls: Iterable[Call]) -> str:
    """The calls as the JSON array the recording statements read (jsonb_to_recordset);
    costs travel as strings, so they stay exact decimals."""
    return json.dumps(
        [
            {
                "call_key": call.call_key,
                "model": call.usage.model,
                "provider": call.usage.provider or "",
                "input_tokens": call.usage.input_tokens,
                "output_tokens": call.usage.output_tokens,
                "cache_read_tokens": call.usage.cache_read_tokens,
                "cache_write_tokens": call.usage.cache_write_tokens,
                "latency_ms": None
                if call.usage.latency_ms is None
                else round(call.usage.latency_ms),
                "cost_usd": None if call.cost_usd is None else str(call.cost_usd),
            }
            for call in calls
        ]
    )
