"""MRR and the other revenue KPIs, as pure functions over Stripe records.

No I/O and no clock here: `now` is an argument, so every rule can be tested with
hand-computed numbers. Amounts are exact Decimals in the currency's minor unit
until `revenue_kpis` converts them. The rules are stated in the README
("How MRR is computed"); keep the two in step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Iterable

from exporter import money
from exporter.sources.stripe.records import Charge, Discount, Price, Subscription, SubscriptionItem

ZERO = Decimal(0)
FAILED_PAYMENTS_WINDOW = 24 * 3600


@dataclass(frozen=True)
class MrrRules:
    """The configurable MRR rules (`sources.stripe.mrr` in the config)."""

    include_past_due: bool = True
    include_cancel_at_period_end: bool = True
    apply_once_discounts: bool = False


def is_counted(subscription: Subscription, rules: MrrRules) -> bool:
    """Only subscriptions that are being paid for count toward MRR."""
    if subscription.status == "active":
        counted = True
    elif subscription.status == "past_due":
        counted = rules.include_past_due
    else:  # trialing, incomplete, incomplete_expired, unpaid, paused, canceled
        counted = False
    scheduled_to_end = subscription.cancel_at_period_end or subscription.cancel_at is not None
    if scheduled_to_end and not rules.include_cancel_at_period_end:
        counted = False
    return counted


def monthly(amount: Decimal, interval: str, interval_count: int) -> Decimal:
    """An amount per billing period, as an amount per month.

    Multiplies before it divides, so that exact results stay exact (a quarterly
    30000 is 10000 a month, not 9999.99...).
    """
    per_year = {"month": 12, "year": 1, "week": 52, "day": 365}.get(interval)
    if per_year is None:
        raise ValueError(f"unknown interval {interval!r}")
    return amount * per_year / (12 * interval_count)


def billed_units(price: Price, quantity: int) -> Decimal:
    """Quantity after transform_quantity (package pricing: per N units)."""
    if not price.divide_by:
        return Decimal(quantity)
    units = Decimal(quantity) / price.divide_by
    rounding = "ROUND_CEILING" if price.round == "up" else "ROUND_FLOOR"
    return units.to_integral_value(rounding=rounding)


def period_amount(price: Price, quantity: int) -> Decimal:
    """One billing period of a licensed price, before discounts, in minor units.

    Metered prices bill for usage after the fact: they are not recurring
    revenue, so they contribute zero. A quantity of zero bills nothing.
    """
    if price.usage_type != "licensed" or quantity <= 0:
        return ZERO
    units = billed_units(price, quantity)
    if price.billing_scheme != "tiered":
        return (price.unit_amount or ZERO) * units
    if price.tiers_mode == "volume":
        return _volume_amount(price, units)
    if price.tiers_mode == "graduated":
        return _graduated_amount(price, units)
    raise ValueError(f"price {price.id}: unknown tiers_mode {price.tiers_mode!r}")


def _volume_amount(price: Price, units: Decimal) -> Decimal:
    # The whole quantity is charged at the single tier it falls into.
    for tier in price.tiers:
        if tier.up_to is None or units <= tier.up_to:
            return tier.unit_amount * units + tier.flat_amount
    raise ValueError(f"price {price.id}: no tier covers quantity {units}")


def _graduated_amount(price: Price, units: Decimal) -> Decimal:
    # Each tier charges for its own slice, plus its flat fee once it is reached.
    total, floor = ZERO, Decimal(0)
    for tier in price.tiers:
        ceiling = units if tier.up_to is None else min(units, Decimal(tier.up_to))
        if ceiling <= floor:
            break
        total += tier.unit_amount * (ceiling - floor) + tier.flat_amount
        floor = ceiling
        if tier.up_to is None or units <= tier.up_to:
            return total
    if floor < units:
        raise ValueError(f"price {price.id}: no tier covers quantity {units}")
    return total


def discount_applies(discount: Discount, now: int, rules: MrrRules) -> bool:
    """Whether a discount is in force at `now`; only a repeating one with an end
    depends on `now` (_depends_on_time)."""
    duration = discount.coupon.duration
    if duration == "forever":
        return True
    if duration == "repeating":
        return discount.end is None or discount.end > now
    if duration == "once":
        return rules.apply_once_discounts
    return False


def apply_discounts(amounts: list[Decimal], products: list[str | None],
                    discounts: tuple[Discount, ...], currency: str, interval: tuple[str, int],
                    now: int, rules: MrrRules) -> list[Decimal]:
    """Apply discounts in Stripe's order to monthly amounts (one per item); never below zero.

    A coupon restricted to some products (`applies_to`) only touches the items
    of those products. An amount_off is per billing period, so `interval`
    normalises it to a month; it comes off the eligible items in turn (the
    total is what matters), and only in a currency the coupon has an amount in.
    """
    amounts = list(amounts)
    for discount in discounts:
        if not discount_applies(discount, now, rules):
            continue
        coupon = discount.coupon
        eligible = [i for i, product in enumerate(products)
                    if coupon.applies_to is None or product in coupon.applies_to]
        if coupon.percent_off is not None:
            for i in eligible:
                amounts[i] -= amounts[i] * coupon.percent_off / 100
            continue
        off = coupon.amount_off_in(currency)
        if off is None:
            continue
        remaining = monthly(off, *interval)
        for i in eligible:
            taken = min(amounts[i], remaining)
            amounts[i] -= taken
            remaining -= taken
    return amounts


def item_mrr(item: SubscriptionItem, currency: str, now: int, rules: MrrRules) -> Decimal:
    price = item.price
    interval = (price.interval, price.interval_count)
    amount = monthly(period_amount(price, item.quantity), *interval)
    [discounted] = apply_discounts([amount], [price.product], item.discounts, currency,
                                   interval, now, rules)
    return discounted


def subscription_mrr(subscription: Subscription, now: int, rules: MrrRules) -> Decimal:
    """Monthly revenue of one subscription, in minor units of its currency: its
    running MRR (below) if it counts toward MRR, else zero."""
    return running_mrr(subscription, now, rules) if is_counted(subscription, rules) else ZERO


# running_mrr keeps (rules, value) on each record it values (Subscription.mrr_memo):
# one shared tuple per distinct value, as most subscriptions share a price.
_MEMOS: dict[tuple[int, Decimal], tuple[MrrRules, Decimal]] = {}
_MAX_MEMOS = 100_000  # then it starts afresh: the records keep the tuples they hold
_TIMED = object()  # the memo of a record whose MRR depends on the moment


def running_mrr(subscription: Subscription, now: int, rules: MrrRules) -> Decimal:
    """What one subscription's items and discounts make a month, in minor units
    of its currency, whatever its status (as if it were being paid for).

    Item discounts apply first, then subscription discounts to the items they
    cover; an amount_off of the subscription is normalised by its billing
    interval (its first item's). Records are immutable, so the value is kept on
    the record for these rules, unless a repeating discount with an end makes
    it depend on `now`.
    """
    memo = subscription.mrr_memo
    if memo is not _TIMED and memo is not None and memo[0] is rules:
        return memo[1]
    value = _running_mrr(subscription, now, rules)
    if memo is not _TIMED:
        if _depends_on_time(subscription):
            memo = _TIMED
        else:
            if len(_MEMOS) >= _MAX_MEMOS:
                _MEMOS.clear()
            memo = _MEMOS.setdefault((id(rules), value), (rules, value))
        object.__setattr__(subscription, "mrr_memo", memo)  # frozen, but for its memo
    return value


def depends_on_time(subscription: Subscription) -> bool:
    """Whether its running MRR depends on the moment it is valued at: whether a
    discount of it ends (the memo tells, once the record was valued)."""
    memo = subscription.mrr_memo
    if memo is None:
        return _depends_on_time(subscription)
    return memo is _TIMED


def _depends_on_time(subscription: Subscription) -> bool:
    """Whether a discount of it ends (discount_applies reads `now` for those only)."""
    discounts = [*subscription.discounts,
                 *(d for item in subscription.items for d in item.discounts)]
    return any(d.coupon.duration == "repeating" and d.end is not None for d in discounts)


def _running_mrr(subscription: Subscription, now: int, rules: MrrRules) -> Decimal:
    if not subscription.items:
        return ZERO
    items = subscription.items
    amounts = [item_mrr(item, subscription.currency, now, rules) for item in items]
    first = items[0].price
    amounts = apply_discounts(amounts, [item.price.product for item in items],
                              subscription.discounts, subscription.currency,
                              (first.interval, first.interval_count), now, rules)
    return sum(amounts, ZERO)


@dataclass(frozen=True)
class RevenueKpis:
    """The revenue KPIs of one poll, in major units."""

    mrr: Decimal  # reporting currency
    mrr_by_currency: dict[str, Decimal]  # billing currency -> its major units
    subscriptions_by_status: dict[str, int]
    paying_customers: int
    # Paying customers whose MRR is in `mrr` (their currency has an fx rate).
    paying_customers_converted: int
    failed_payments: int
    failed_payments_amount: Decimal  # reporting currency
    # currency -> counted subscriptions (or failed charges) left out for lack of an fx rate
    missing_fx: dict[str, int] = field(default_factory=dict)

    @property
    def arpa(self) -> Decimal | None:
        count = self.paying_customers_converted
        return self.mrr / count if count else None


def revenue_kpis(subscriptions: list[Subscription], charges: list[Charge], *, now: int,
                 fx_rates: dict[str, Decimal], rules: MrrRules = MrrRules()) -> RevenueKpis:
    totals = mrr_totals(((s.customer, s.currency, subscription_mrr(s, now, rules))
                         for s in subscriptions if is_counted(s, rules)), fx_rates)
    missing_fx = Counter(totals.missing_fx)
    failed_count, failed_amount = 0, ZERO
    for charge in charges:
        if charge.status != "failed" or charge.created < now - FAILED_PAYMENTS_WINDOW:
            continue
        failed_count += 1
        converted = money.to_reporting(charge.amount, charge.currency, fx_rates)
        if converted is None:
            missing_fx[charge.currency] += 1
        else:
            failed_amount += converted
    return replace(totals, subscriptions_by_status=dict(Counter(s.status for s in subscriptions)),
                   failed_payments=failed_count, failed_payments_amount=failed_amount,
                   missing_fx=dict(missing_fx))


def mrr_totals(amounts: Iterable[tuple[str, str, Decimal]],
               fx_rates: dict[str, Decimal]) -> RevenueKpis:
    """MRR, MRR by currency and paying customers from (customer, billing currency,
    monthly amount in minor units) entries, one per counted subscription (or billed
    line); no statuses, no failed payments. A customer pays when an entry is above
    zero; an entry in a currency without an fx rate is left out of `mrr` and counted
    in `missing_fx`."""
    by_currency: dict[str, Decimal] = {}
    # The customers with MRR above zero in any currency -> whether some of it is in a
    # currency with an fx rate: one dict, a third of what two sets of them took.
    paying: dict[str, bool] = {}
    missing_fx: Counter[str] = Counter()
    for customer, currency, minor in amounts:
        amount = money.to_major(minor, currency)
        by_currency[currency] = by_currency.get(currency, ZERO) + amount
        if currency not in fx_rates:
            missing_fx[currency] += 1
        if amount > 0:
            paying[customer] = paying.get(customer, False) or currency in fx_rates
    mrr = sum((money.convert(amount, currency, fx_rates) for currency, amount in by_currency.items()
               if currency in fx_rates), ZERO)
    return RevenueKpis(mrr=mrr, mrr_by_currency=by_currency, subscriptions_by_status={},
                       paying_customers=len(paying), paying_customers_converted=sum(paying.values()),
                       failed_payments=0, failed_payments_amount=ZERO, missing_fx=dict(missing_fx))


def customer_mrr(subscriptions: list[Subscription], at: int, fx_rates: dict[str, Decimal],
                 rules: MrrRules = MrrRules()) -> dict[str, Decimal]:
    """Each customer's MRR at `at`, in the reporting currency, paying customers only.

    Subscriptions in a currency without an fx rate are left out, at every
    moment alike, so they never show up as movements.
    """
    result: dict[str, Decimal] = {}
    # One converted value per amount and currency: most subscriptions bill one of a
    # few hundred amounts, and a Decimal per customer would make each moment valued
    # some 9 MiB at 100,000 subscriptions (most customers have one subscription,
    # whose value is then held, not a sum made anew).
    converted: dict[tuple[Decimal, str], Decimal | None] = {}
    for subscription in subscriptions:
        minor = subscription_mrr(subscription, at, rules)
        if not minor:
            continue
        key = (minor, subscription.currency)
        try:
            amount = converted[key]
        except KeyError:
            amount = converted[key] = money.to_reporting(minor, subscription.currency, fx_rates)
        if amount:
            held = result.get(subscription.customer)
            result[subscription.customer] = amount if held is None else held + amount
    return result
