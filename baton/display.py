"""Small formatting helpers shared by the admin and the live pages."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.utils import timezone

EMPTY = "—"


def format_moment(moment: datetime.datetime | None) -> str:
    """A point in time for people, to the second, with its zone: "2026-12-02 14:19:24 UTC"
    (in the current time zone; the live pages show it in the browser's, UTC on hover)."""
    if moment is None:
        return EMPTY
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + (moment.tzname() or "")


def format_seconds(seconds: float) -> str:
    """A duration for people: "4.2 s", "3m 07s", "1h 02m 03s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_usd(amount: Decimal | None, unpriced_calls: int = 0) -> str:
    """A cost for people, from the ledger's totals (cost_usd, unpriced_calls).

    "—" when no call was recorded, "unknown" when every call was unpriced, and
    "$0.0123 + 2 unpriced" when some were. Amounts of a dollar or more show cents
    ("$1.20", "$1,234.50"); smaller ones keep three significant digits, so a fraction of a
    cent never reads as "$0.00" ("$0.000021").
    """
    if amount is None:
        return "unknown" if unpriced_calls else "—"
    text = _dollars(Decimal(amount))
    if unpriced_calls:
        return f"{text} + {unpriced_calls:,} unpriced"
    return text


_CENT = Decimal("0.01")


def _dollars(amount: Decimal) -> str:
    if not amount.is_finite():
        return f"${amount}"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0 or amount >= 1:
        return f"{sign}${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,}"
    # Three significant digits: 0.0123 has adjusted() == -2, so 4 places.
    places = max(2, 2 - amount.adjusted())
    text = f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"
