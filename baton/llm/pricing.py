"""What a model call cost: the default price table and the ``BATON["PRICING"]`` hook.

A pricing class has one method, ``cost(usage) -> Decimal | None``. ``None`` means the price
is unknown: the cost is then stored as unknown, never as 0, so a total over unknown calls
is not understated in silence. ``price(usage)`` is what baton calls: it uses the class
``BATON["PRICING"]`` names and checks what it returns.

``DefaultPricing`` reads the price data bundled with the installed genai-prices package.
It never uses the network: genai-prices only fetches prices while a
``genai_prices.UpdatePrices`` is started (its background thread then replaces the bundled
snapshot), and baton never starts one. Importing genai-prices opens no connection either.
"""

from __future__ import annotations

import functools
import logging
import threading
from decimal import Decimal
from typing import Protocol

from django.utils.module_loading import import_string

from baton.conf import settings

__all__ = ["DefaultPricing", "PricedUsage", "load_pricing", "price"]

logger = logging.getLogger(__name__)


class PricedUsage(Protocol):
    """What a pricing class reads from a usage (``baton.llm.usage.Usage`` has it all).

    ``input_tokens`` counts every input token, cached ones included; ``cache_read_tokens``
    and ``cache_write_tokens`` say how many of them were read from or written to the prompt
    cache. A usage may also have ``provider`` (a string or None).
    """

    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


class DefaultPricing:
    """Prices usage with the price data bundled with genai-prices, in US dollars.

    The provider, when the usage names one (``"openai"``, ``"anthropic"``, ``"azure"``,
    ...: a genai-prices provider id or alias), picks that provider's price table;
    otherwise genai-prices infers the provider from the model name. An unknown model or
    provider costs ``None``. So does any failure inside genai-prices (for instance a usage
    whose cached tokens exceed its input tokens): a price must never break the step that
    recorded the call. Each is logged as a warning once per (provider, model).
    """

    def __init__(self) -> None:
        # Imported here rather than at module level: its price tables take about 0.2 s to
        # load, which `manage.py check` (it imports this module) need not pay. Importing in
        # __init__ rather than in cost() makes a missing genai-prices fail loudly, at once.
        import genai_prices

        self.data_version: str = genai_prices.__version__
        # (provider, model) pairs genai-prices has no price for. It caches the models it
        # finds but not the misses, and a miss rescans a provider's models (about 0.1 ms).
        # Valid because the price data never changes: no UpdatePrices is ever started.
        self._unknown: set[tuple[str | None, str]] = set()
        self._warned: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    def cost(self, usage: PricedUsage) -> Decimal | None:
        """The cost of ``usage`` in US dollars, or None when it cannot be priced."""
        provider: str | None = getattr(usage, "provider", None) or None
        key = (provider, usage.model)
        if key in self._unknown:
            return None
        # Already loaded by __init__, so this is a dictionary lookup.
        from genai_prices import Usage, calc_price

        try:
            # genai-prices counts input_tokens as baton does, cached tokens included: its
            # cache_read_tokens and cache_write_tokens units are children of input_tokens,
            # and the base input rate applies to input_tokens minus them. So no conversion.
            tokens = Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
            calculation = calc_price(tokens, usage.model, provider_id=provider)
        except LookupError as exc:
            # genai-prices raises exactly LookupError for an unknown provider or model; a
            # subclass (KeyError, IndexError) would be a bug in it, not a miss to remember.
            if type(exc) is not LookupError:
                self._warn_once(key, "pricing %r (provider %r) failed", exc_info=True)
                return None
            with self._lock:
                self._unknown.add(key)
            self._warn_once(
                key,
                "no price for model %r (provider %r) in the data of genai-prices %s; "
                "its cost is stored as unknown",
                self.data_version,
            )
            return None
        except Exception:
            # Bad usage data (genai-prices raises ValueError) or a bug in genai-prices.
            self._warn_once(key, "pricing %r (provider %r) failed", exc_info=True)
            return None
        total: Decimal = calculation.total_price
        return total

    def _warn_once(
        self, key: tuple[str | None, str], message: str, *args: object, exc_info: bool = False
    ) -> None:
        """Log ``message`` % (model, provider, *args) the first time ``key`` fails."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        provider, model = key
        logger.warning(message, model, provider, *args, exc_info=exc_info)


def load_pricing() -> object:
    """The instance of the class ``BATON["PRICING"]`` names, one per dotted path."""
    return _pricing_instance(settings.PRICING)


@functools.cache
def _pricing_instance(path: str) -> object:
    # Keyed by path, so a changed setting (override_settings) gets its own instance.
    pricing_class = import_string(path)
    return pricing_class()


def price(usage: PricedUsage) -> Decimal | None:
    """The cost of ``usage`` by the configured pricing class, as a Decimal >= 0 or None.

    None means unknown: store it as unknown, never as 0. An int the class returns becomes
    a Decimal. Any other return raises: TypeError for a float (inexact money) or another
    type, ValueError for a negative, NaN or infinite Decimal. An exception from the class
    itself propagates; ``DefaultPricing`` raises none.
    """
    pricing = load_pricing()
    value: object = pricing.cost(usage)  # type: ignore[attr-defined]
    if value is None:
        return None
    name = f"{type(pricing).__module__}.{type(pricing).__qualname__}"
    # bool is an int, but True as a cost is a bug, not one dollar.
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(
            f"{name}.cost() must return Decimal or None, got {type(value).__name__} {value!r}"
        )
    # is_finite first: comparing a signalling NaN with 0 raises InvalidOperation.
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name}.cost() must return a finite Decimal >= 0 or None, got {value!r}")
    return value
