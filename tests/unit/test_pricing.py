"""baton.llm.pricing: DefaultPricing's prices, its unknowns, no network, and price()'s checks.

No database: pricing is pure computation over genai-prices' bundled data.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import override_settings
from genai_prices import data_snapshot

import baton.pricing
from baton.llm.pricing import DefaultPricing, load_pricing, price
from baton.llm.usage import Usage

MTOK = Decimal(1_000_000)
ROOT = Path(__file__).resolve().parents[2]

# Published list prices in US dollars per million tokens (openai.com/api/pricing,
# anthropic.com/pricing). The tests check genai-prices holds the same, then price by hand.
GPT_4O = {"input": Decimal("2.5"), "cache_read": Decimal("1.25"), "output": Decimal("10")}
CLAUDE_SONNET = {
    "input": Decimal("3"),
    "cache_read": Decimal("0.3"),
    "cache_write": Decimal("3.75"),  # 5-minute cache writes, the API's default
    "output": Decimal("15"),
}


def held_rates(model: str, provider: str | None) -> dict[str, object]:
    """The per-million rates genai-prices holds today for ``model``, through its own API."""
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    prices = info.get_prices(datetime.now(UTC))
    return {
        "input": prices.input_mtok,
        "cache_read": prices.cache_read_mtok,
        "cache_write": prices.cache_write_mtok,
        "output": prices.output_mtok,
    }


def test_gpt_4o_is_priced_exactly() -> None:
    assert held_rates("gpt-4o", None) == {**GPT_4O, "cache_write": None}
    usage = Usage(model="gpt-4o", input_tokens=12_345, output_tokens=678, cache_read_tokens=2_345)
    cost = DefaultPricing().cost(usage)
    expected = (
        (12_345 - 2_345) * GPT_4O["input"] + 2_345 * GPT_4O["cache_read"] + 678 * GPT_4O["output"]
    ) / MTOK
    assert type(cost) is Decimal
    assert cost == expected == Decimal("0.03471125")


def test_gpt_4o_cache_writes_cost_the_input_rate() -> None:
    # OpenAI charges nothing extra to write its cache: genai-prices has no cache write rate
    # for gpt-4o, so written tokens stay in input_tokens at the base rate.
    usage = Usage(model="gpt-4o", input_tokens=1_000, output_tokens=0, cache_write_tokens=400)
    assert DefaultPricing().cost(usage) == 1_000 * GPT_4O["input"] / MTOK


@pytest.mark.parametrize(
    ("model", "provider"),
    [("claude-sonnet-4", "anthropic"), ("claude-3-5-sonnet-latest", None)],
)
def test_claude_sonnet_is_priced_exactly_with_cache_reads_and_writes(
    model: str, provider: str | None
) -> None:
    assert held_rates(model, provider) == CLAUDE_SONNET
    usage = Usage(
        model=model,
        input_tokens=12_345,
        output_tokens=678,
        cache_read_tokens=2_000,
        cache_write_tokens=1_000,
        provider=provider,
    )
    cost = DefaultPricing().cost(usage)
    expected = (
        (12_345 - 2_000 - 1_000) * CLAUDE_SONNET["input"]
        + 2_000 * CLAUDE_SONNET["cache_read"]
        + 1_000 * CLAUDE_SONNET["cache_write"]
        + 678 * CLAUDE_SONNET["output"]
    ) / MTOK
    assert type(cost) is Decimal
    assert cost == expected == Decimal("0.042555")


def test_no_tokens_cost_zero_not_unknown() -> None:
    cost = DefaultPricing().cost(Usage(model="gpt-4o"))
    assert type(cost) is Decimal and cost == 0


def test_a_duck_typed_usage_without_provider_is_priced() -> None:
    usage = SimpleNamespace(
        model="gpt-4o",
        input_tokens=1_000_000,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
    )
    assert DefaultPricing().cost(usage) == GPT_4O["input"]


@pytest.mark.parametrize(
    ("model", "provider"),
    [("acme-llm-9000", None), ("acme-llm-9000", "openai"), ("gpt-4o", "acme-cloud")],
)
def test_unknown_model_or_provider_is_none_never_zero(
    model: str, provider: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    pricing = DefaultPricing()
    usage = Usage(model=model, input_tokens=10, output_tokens=10, provider=provider)
    with caplog.at_level(logging.WARNING, logger="baton.llm.pricing"):
        assert pricing.cost(usage) is None
        assert pricing.cost(usage) is None
    warnings = [r for r in caplog.records if r.name == "baton.llm.pricing"]
    assert len(warnings) == 1, "warned once per (provider, model)"
    assert model in warnings[0].getMessage() and "unknown" in warnings[0].getMessage()


def test_a_failure_inside_genai_prices_is_none_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # More cached tokens than input tokens: genai-prices raises ValueError.
    usage = SimpleNamespace(
        model="claude-sonnet-4",
        input_tokens=10,
        output_tokens=0,
        cache_read_tokens=500,
        cache_write_tokens=0,
    )
    pricing = DefaultPricing()
    with caplog.at_level(logging.WARNING, logger="baton.llm.pricing"):
        assert pricing.cost(usage) is None
        assert pricing.cost(usage) is None
    warnings = [r for r in caplog.records if r.name == "baton.llm.pricing"]
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None and warnings[0].exc_info[0] is ValueError
    # The model is known: a later, valid usage of it is still priced.
    assert pricing.cost(Usage(model="claude-sonnet-4", input_tokens=10)) == Decimal("0.00003")


NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import socket
    import sys
    import threading
    from decimal import Decimal

    attempts = []

    def blocked(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    socket.socket.connect = blocked
    socket.socket.connect_ex = blocked
    socket.create_connection = blocked
    socket.getaddrinfo = blocked

    assert "genai_prices" not in sys.modules
    from genai_prices import data_snapshot
    from baton.llm.pricing import DefaultPricing
    from baton.llm.usage import Usage

    pricing = DefaultPricing()
    for model, provider in [
        ("gpt-4o", None),
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet-4", "anthropic"),
        ("claude-3-5-haiku-latest", None),
        ("gemini-2.5-pro", None),
    ]:
        usage = Usage(model=model, input_tokens=1000, output_tokens=100,
                      cache_read_tokens=200, provider=provider)
        cost = pricing.cost(usage)
        # DefaultPricing turns any failure into None, so a swallowed network error shows here.
        assert type(cost) is Decimal, (model, cost)
        print(model, repr(cost))
    assert pricing.cost(Usage(model="acme-llm-9000", input_tokens=1)) is None
    assert attempts == [], attempts
    assert data_snapshot._custom_snapshot is None, "prices were replaced by an update"
    assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
    print("no network")
    """
)


def test_pricing_never_touches_the_network() -> None:
    # A fresh interpreter, so genai_prices is imported cold with sockets already blocked.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "gpt-4o Decimal('" in result.stdout
    assert "claude-sonnet-4 Decimal('" in result.stdout
    assert result.stdout.rstrip().endswith("no network")


# --- load_pricing and price ---------------------------------------------------------------


class ReturnsFloat:
    def cost(self, usage: object) -> object:
        return 0.25


class ReturnsInt:
    def cost(self, usage: object) -> object:
        return 3


class ReturnsNone:
    def cost(self, usage: object) -> object:
        return None


class ReturnsNegative:
    def cost(self, usage: object) -> object:
        return Decimal("-0.01")


class ReturnsNegativeInt:
    def cost(self, usage: object) -> object:
        return -1


class ReturnsNaN:
    def cost(self, usage: object) -> object:
        return Decimal("NaN")


class ReturnsSignallingNaN:
    def cost(self, usage: object) -> object:
        return Decimal("sNaN")


class ReturnsInfinity:
    def cost(self, usage: object) -> object:
        return Decimal("Infinity")


class ReturnsBool:
    def cost(self, usage: object) -> object:
        return True


class ReturnsString:
    def cost(self, usage: object) -> object:
        return "0.25"


class ReturnsDecimal:
    def cost(self, usage: object) -> object:
        return Decimal("0.125")


USAGE = Usage(model="gpt-4o", input_tokens=1_000, output_tokens=100)


def pricing_path(cls: type) -> str:
    return f"{__name__}.{cls.__qualname__}"


def test_load_pricing_defaults_to_default_pricing() -> None:
    assert baton.pricing.DefaultPricing is DefaultPricing
    assert baton.pricing.price is price
    pricing = load_pricing()
    assert type(pricing) is DefaultPricing
    assert load_pricing() is pricing, "one instance per path"
    cost = price(USAGE)
    assert type(cost) is Decimal
    assert cost == (1_000 * GPT_4O["input"] + 100 * GPT_4O["output"]) / MTOK


def test_load_pricing_follows_override_settings() -> None:
    default = load_pricing()
    with override_settings(BATON={"PRICING": pricing_path(ReturnsDecimal)}):
        assert type(load_pricing()) is ReturnsDecimal
        assert price(USAGE) == Decimal("0.125")
    assert load_pricing() is default


@pytest.mark.parametrize(
    ("cls", "expected"),
    [(ReturnsInt, Decimal(3)), (ReturnsNone, None), (ReturnsDecimal, Decimal("0.125"))],
)
def test_price_passes_decimal_and_none_and_converts_int(
    cls: type, expected: Decimal | None
) -> None:
    with override_settings(BATON={"PRICING": pricing_path(cls)}):
        cost = price(USAGE)
    assert cost == expected
    assert type(cost) is type(expected)


@pytest.mark.parametrize("cls", [ReturnsFloat, ReturnsBool, ReturnsString])
def test_price_rejects_other_types(cls: type) -> None:
    with (
        override_settings(BATON={"PRICING": pricing_path(cls)}),
        pytest.raises(TypeError, match="must return Decimal or None") as raised,
    ):
        price(USAGE)
    assert pricing_path(cls) in str(raised.value)


@pytest.mark.parametrize(
    "cls",
    [ReturnsNegative, ReturnsNegativeInt, ReturnsNaN, ReturnsSignallingNaN, ReturnsInfinity],
)
def test_price_rejects_negative_and_non_finite(cls: type) -> None:
    with (
        override_settings(BATON={"PRICING": pricing_path(cls)}),
        pytest.raises(ValueError, match=">= 0") as raised,
    ):
        price(USAGE)
    assert pricing_path(cls) in str(raised.value)
