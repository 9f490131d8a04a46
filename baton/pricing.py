"""baton's pricing: ``DefaultPricing`` (the default of ``BATON["PRICING"]``) and ``price``."""

from baton.llm.pricing import DefaultPricing, price

__all__ = ["DefaultPricing", "price"]
