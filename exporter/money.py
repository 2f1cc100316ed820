"""Currency units and conversion, in exact decimals.

Stripe sends amounts in a currency's smallest unit. Most currencies have two
decimals (cents); Stripe's zero-decimal currencies (JPY, KRW, ...) are sent as
whole units and three-decimal ones (BHD, KWD, ...) in thousandths.
"""

from __future__ import annotations

import functools
from decimal import Decimal

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
ZERO_DECIMAL = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
    "vnd", "vuv", "xaf", "xof", "xpf",
})
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


@functools.lru_cache(maxsize=512)  # asked for every amount of every poll
def minor_per_major(currency: str) -> Decimal:
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        return Decimal(1)
    if currency in THREE_DECIMAL:
        return Decimal(1000)
    return Decimal(100)


def to_major(amount_minor: Decimal, currency: str) -> Decimal:
    """Stripe's minor-unit amount -> major units (dollars, not cents)."""
    return amount_minor / minor_per_major(currency)


def convert(amount_major: Decimal, currency: str, fx_rates: dict[str, Decimal]) -> Decimal | None:
    """Major units of `currency` -> reporting currency; None when there is no rate.

    fx_rates holds units of the reporting currency per one unit of each currency
    (the reporting currency itself maps to 1).
    """
    rate = fx_rates.get(currency.lower())
    return None if rate is None else amount_major * rate


def to_reporting(amount_minor: Decimal, currency: str, fx_rates: dict[str, Decimal]) -> Decimal | None:
    """Stripe's minor-unit amount -> major units of the reporting currency; None without a rate."""
    return convert(to_major(amount_minor, currency), currency, fx_rates)
