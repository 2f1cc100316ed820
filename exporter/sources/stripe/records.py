"""Plain typed records for the Stripe objects the KPI math needs.

Amounts stay in the currency's minor unit (cents; whole yen for JPY) as
`Decimal`, exactly as Stripe sends them, so no rounding happens before the
final conversion to a metric value. Times are Unix seconds. The records are
slotted: a large account holds hundreds of thousands of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # None: the last tier, "inf" in Stripe
    unit_amount: Decimal = Decimal(0)
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    id: str
    currency: str
    interval: str  # day, week, month, year
    interval_count: int = 1
    usage_type: str = "licensed"  # metered prices are usage, not MRR
    billing_scheme: str = "per_unit"  # or tiered
    unit_amount: Decimal | None = None  # from unit_amount_decimal
    tiers_mode: str | None = None  # volume or graduated
    tiers: tuple[Tier, ...] = ()
    # transform_quantity: bill for ceil/floor(quantity / divide_by) units
    divide_by: int | None = None
    round: str = "up"
    product: str | None = None
    # A multi-currency price's amounts in its other currencies (expand-only in Stripe).
    currency_options: dict[str, "CurrencyOption"] = field(default_factory=dict)

    def in_currency(self, currency: str) -> "Price":
        """This price as billed in `currency`: itself, or one of its currency_options."""
        if currency == self.currency:
            return self
        option = self.currency_options.get(currency)
        if option is None:
            raise KeyError(currency)
        return replace(self, currency=currency, unit_amount=option.unit_amount,
                       tiers=option.tiers or self.tiers, currency_options={})


@dataclass(frozen=True, slots=True)
class CurrencyOption:
    unit_amount: Decimal | None = None
    tiers: tuple[Tier, ...] = ()


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    duration: str  # forever, repeating, once
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None  # minor units of `currency`
    currency: str | None = None
    currency_options: dict[str, Decimal] = field(default_factory=dict)  # currency -> amount_off
    # Products a coupon is restricted to (`applies_to.products`); None: every product.
    applies_to: frozenset[str] | None = None

    def amount_off_in(self, currency: str) -> Decimal | None:
        """The fixed amount off in a currency, or None if the coupon has none there."""
        if currency in self.currency_options:
            return self.currency_options[currency]
        if self.amount_off is not None and self.currency == currency:
            return self.amount_off
        return None


@dataclass(frozen=True, slots=True)
class Discount:
    id: str
    coupon: Coupon
    end: int | None = None  # set for repeating coupons only


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    # No id: nothing valued reads it, and a large account holds one per item.
    price: Price
    quantity: int = 1
    discounts: tuple[Discount, ...] = ()


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer: str
    status: str
    currency: str
    items: tuple[SubscriptionItem, ...]
    discounts: tuple[Discount, ...] = ()
    cancel_at_period_end: bool = False
    cancel_at: int | None = None  # a cancellation scheduled for a set date
    start_date: int = 0
    ended_at: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    created: int = 0
    # What mrr.running_mrr found for this record, kept on it: most records are
    # valued at several moments in every poll, and most never change. Not a
    # field of the record's state (not compared, not copied by replace).
    mrr_memo: object = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """A `customer.subscription.*` event, parsed once (history.settled): what
    rebuilding the past reads of it."""

    id: str
    type: str
    created: int
    subscription: str
    # The subscription after the event, and before it (put back from
    # previous_attributes) where the event says (`puts_back`); None until settled.
    after: Subscription | None = None
    before: Subscription | None = None
    puts_back: bool = False
    # The slimmed event, kept while it names a price, coupon or discount not known
    # yet (then it is parsed again at the next poll); None once settled for good.
    pending: dict | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    status: str  # succeeded, pending, failed
    amount: Decimal
    currency: str
    created: int


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One subscription line of a paid invoice: what was billed for a period."""

    customer: str
    currency: str
    amount: Decimal  # minor units, after the line's discounts
    period_start: int
    period_end: int
    price_id: str | None
    proration: bool = False
    subscription: str | None = None
    subscription_item: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    status: str
    amount: Decimal
    currency: str
    created: int


@dataclass(frozen=True, slots=True)
class Dispute:
    id: str
    status: str
    amount: Decimal
    currency: str
    created: int
