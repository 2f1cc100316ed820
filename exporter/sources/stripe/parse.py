"""Turn Stripe API objects (API version 2026-07-29.dahlia) into typed records.

Pure functions: JSON dicts in, records out. Anything missing or of the wrong
type raises `MalformedObject` naming the object and the field, so a changed or
broken upstream marks the source down instead of producing wrong numbers.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Iterator, Mapping

from exporter.sources.base import UpstreamDataError
from exporter.sources.stripe.records import (
    Charge,
    Coupon,
    CurrencyOption,
    Discount,
    Dispute,
    InvoiceLine,
    Price,
    Refund,
    Subscription,
    SubscriptionItem,
    Tier,
)


class MalformedObject(UpstreamDataError):
    pass


def _field(obj: dict, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if type(obj) is dict:
        value = obj.get(name)
        # Most fields are of exactly the type asked for (a bool is never an int here):
        # a full sync asks some 16 of each subscription.
        if (type(value) is kind or (value is None and optional)
                or (type(kind) is tuple and type(value) in kind)):
            return value
    return _checked(obj, name, kind, optional)


def _checked(obj: Any, name: str, kind: type | tuple[type, ...], optional: bool) -> Any:
    if not isinstance(obj, dict):
        raise MalformedObject(f"expected an object, got {type(obj).__name__}")
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise MalformedObject(f"{obj.get('object', 'object')} {obj.get('id', '?')}: "
                              f"field {name!r} is missing or not {_names(kind)}")
    return value


# The currency codes seen, as sent -> checked, lower case and interned: at most
# 26 ** 3 of them (each checked once).
_CURRENCIES: dict[str, str] = {}


def _currency(obj: dict, name: str = "currency") -> str:
    """A three-letter ISO currency code, lower case: it becomes a label value."""
    sent = _field(obj, name, str)
    code = _CURRENCIES.get(sent)
    if code is None:
        code = sent.lower()
        if not re.fullmatch(r"[a-z]{3}", code):
            raise MalformedObject(f"{obj.get('object', 'object')} {obj.get('id', '?')}: "
                                  f"{name} {code!r} is not a currency code")
        code = _CURRENCIES[sent] = sys.intern(code)
    return code


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _tuple(kind))


def _amount(obj: dict, name: str, *, optional: bool = False) -> Decimal | None:
    """Prefer Stripe's exact `<name>_decimal` string over the integer field."""
    text = obj.get(f"{name}_decimal")
    if text is not None:
        try:
            return Decimal(str(text))
        except InvalidOperation:
            raise MalformedObject(f"{obj.get('id', '?')}: {name}_decimal {text!r} is not a number") from None
    value = _field(obj, name, (int, float), optional=optional)
    return None if value is None else Decimal(str(value))


def _tiers(obj: dict) -> tuple[Tier, ...]:
    """Tiers, present only when the request expanded them."""
    if obj.get("tiers") is None:
        return ()
    return tuple(
        Tier(
            up_to=_field(tier, "up_to", int, optional=True),
            unit_amount=_amount(tier, "unit_amount", optional=True) or Decimal(0),
            flat_amount=_amount(tier, "flat_amount", optional=True) or Decimal(0),
        )
        for tier in _field(obj, "tiers", list)
    )


def parse_price(obj: dict) -> Price:
    recurring = _field(obj, "recurring", dict)
    billing_scheme = _field(obj, "billing_scheme", str)
    tiers = _tiers(obj) if billing_scheme == "tiered" else ()
    transform = obj.get("transform_quantity") or {}
    product = obj.get("product")
    return Price(
        id=_field(obj, "id", str),
        product=product if isinstance(product, str) else (product or {}).get("id"),
        currency_options={
            currency.lower(): CurrencyOption(unit_amount=_amount(option, "unit_amount", optional=True),
                                             tiers=_tiers(option))
            for currency, option in (obj.get("currency_options") or {}).items()
        },
        currency=_currency(obj),
        interval=_field(recurring, "interval", str),
        interval_count=_field(recurring, "interval_count", int),
        usage_type=recurring.get("usage_type") or "licensed",
        billing_scheme=billing_scheme,
        unit_amount=_amount(obj, "unit_amount", optional=True),
        tiers_mode=_field(obj, "tiers_mode", str, optional=True),
        tiers=tiers,
        divide_by=transform.get("divide_by"),
        round=transform.get("round") or "up",
    )


def parse_coupon(obj: dict) -> Coupon:
    percent_off = _field(obj, "percent_off", (int, float), optional=True)
    options = obj.get("currency_options") or {}
    # Stripe shows an unrestricted coupon with an empty product list.
    applies_to = (obj.get("applies_to") or {}).get("products")
    return Coupon(
        applies_to=frozenset(applies_to) if applies_to else None,
        id=_field(obj, "id", str),
        duration=_field(obj, "duration", str),
        percent_off=None if percent_off is None else Decimal(str(percent_off)),
        amount_off=_amount(obj, "amount_off", optional=True),
        currency=(obj.get("currency") or "").lower() or None,
        currency_options={
            currency.lower(): Decimal(str(option["amount_off"]))
            for currency, option in options.items()
            if isinstance(option, dict) and option.get("amount_off") is not None
        },
    )


def discounts_on(subscription: dict) -> Iterator[Any]:
    """The discounts (ids or objects) a subscription and its embedded items carry;
    also works on an event's previous_attributes."""
    holders = [subscription, *((subscription.get("items") or {}).get("data") or [])]
    for holder in holders:
        if isinstance(holder, dict):
            yield from holder.get("discounts") or []


def _coupon_ref(discount: dict) -> Any:
    """A discount's coupon (an id or an object). Dahlia keeps it under
    `source.coupon`; events are rendered in the account's own API version,
    and versions before 2025-09-30 embed the whole coupon as `coupon`."""
    if not isinstance(discount, dict):
        raise MalformedObject(f"expected a discount object, got {type(discount).__name__}")
    if isinstance(discount.get("source"), dict):
        return discount["source"].get("coupon")
    return discount.get("coupon")


def coupon_id(discount: dict) -> str:
    """The id of the coupon a discount came from."""
    coupon = _coupon_ref(discount)
    if isinstance(coupon, dict):
        coupon = coupon.get("id")
    if not isinstance(coupon, str):
        raise MalformedObject(f"discount {discount.get('id', '?')}: source.coupon is missing")
    return coupon


# Discounts by id: expanded discount objects (of discount events), or the ones
# held subscriptions carry, parsed.
KnownDiscounts = Mapping[str, "dict | Discount"]


def parse_discount(obj: Any, coupons: dict[str, Coupon],
                   known_discounts: KnownDiscounts | None = None) -> Discount | None:
    """A discount with its coupon.

    The coupon comes from the coupon list (which carries the expand-only
    `applies_to` and `currency_options`), or else from the discount itself when
    `source.coupon` was expanded (a deleted coupon keeps its discounts in force).
    Subscriptions are listed with discounts expanded; event payloads name them
    by id only, so past states look them up in `known_discounts` (None: ids are
    an error), and an id never seen, or whose coupon is unknown, is skipped (None).
    """
    if isinstance(obj, str):
        if known_discounts is None:
            raise MalformedObject(f"discount {obj} was not expanded")
        if obj not in known_discounts:
            return None
        obj = known_discounts[obj]
        if isinstance(obj, Discount):  # parsed with these coupons (held.py)
            return obj
    wanted = coupon_id(obj)
    coupon = coupons.get(wanted)
    if coupon is None:
        embedded = _coupon_ref(obj)
        if not isinstance(embedded, dict):
            if known_discounts is not None:
                return None  # a past discount whose coupon is gone: nothing to value it by
            raise MalformedObject(f"discount {obj.get('id', '?')}: coupon {wanted} not found")
        coupon = parse_coupon(embedded)
    return Discount(id=_field(obj, "id", str), coupon=coupon,
                    end=_field(obj, "end", int, optional=True))


def _discounts(obj: dict, coupons: dict[str, Coupon],
               known_discounts: KnownDiscounts | None) -> tuple[Discount, ...]:
    listed = obj.get("discounts")
    if not listed:  # most subscriptions and items
        return ()
    parsed = (parse_discount(d, coupons, known_discounts) for d in listed)
    return tuple(d for d in parsed if d is not None)


class SharedItems:
    """One SubscriptionItem per listed price, currency and quantity (without
    discounts of its own), and one tuple per list of them. A large account's
    subscriptions bill a few hundred such items between them, and each record
    would otherwise hold its own (and its own copy of a multi-currency price).

    An item is shared only while its price is the listed one it was made from
    (`is`): a full sync's new price list makes new items, never a stale one."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, int], tuple[Price, SubscriptionItem]] = {}
        # Keyed by the ids of shared items, which this table keeps alive.
        self._tuples: dict[tuple[int, ...], tuple[SubscriptionItem, ...]] = {}

    def item(self, listed: Price, currency: str, quantity: int) -> SubscriptionItem:
        """Raises KeyError when the price has no amount in `currency`."""
        key = (listed.id, currency, quantity)
        held = self._items.get(key)
        if held is None or held[0] is not listed:
            held = self._items[key] = (listed, SubscriptionItem(listed.in_currency(currency),
                                                                quantity))
        return held[1]

    def items(self, items: list[SubscriptionItem]) -> tuple[SubscriptionItem, ...]:
        """The shared tuple of these items, which `item` made."""
        key = tuple(map(id, items))
        held = self._tuples.get(key)
        if held is None:
            held = self._tuples[key] = tuple(items)
        return held


def parse_subscription(obj: dict, prices: dict[str, Price], coupons: dict[str, Coupon],
                       items: list[dict] | None = None,
                       known_discounts: KnownDiscounts | None = None,
                       shared: SharedItems | None = None) -> Subscription:
    """`prices` supplies tiers (the embedded price has none); `items` replaces
    the embedded item list when it was paged separately; `known_discounts`
    resolves discount ids (see parse_discount); `shared` gives items already
    made for an equal one (SharedItems)."""
    if items is None:
        items = _field(_field(obj, "items", dict), "data", list)
    currency = _currency(obj)
    parsed_items = []
    all_shared = shared is not None
    for item in items:
        embedded = _field(item, "price", dict)
        listed = prices.get(embedded.get("id"))
        price = listed or parse_price(embedded)
        _field(item, "id", str)  # an item must have one, though the record keeps none
        quantity = _field(item, "quantity", int, optional=True) or 0
        discounts = _discounts(item, coupons, known_discounts)
        try:
            if shared is not None and listed is not None and not discounts:
                parsed_items.append(shared.item(listed, currency, quantity))
                continue
            all_shared = False
            parsed_items.append(SubscriptionItem(price=price.in_currency(currency),
                                                 quantity=quantity, discounts=discounts))
        except KeyError:
            raise MalformedObject(f"subscription {obj.get('id')}: price {price.id} has no "
                                  f"amount in {currency}") from None
    customer = _field(obj, "customer", (str, dict))
    customer = customer if isinstance(customer, str) else _field(customer, "id", str)
    created = _field(obj, "created", int, optional=True) or 0
    start_date = _field(obj, "start_date", int, optional=True) or _field(obj, "created", int)
    # Interned: a large account holds a record per subscription and per past state,
    # and each decoded page names "active" and a customer's id afresh (and most
    # subscriptions start when they are created: one int for both).
    return Subscription(
        id=_field(obj, "id", str),
        customer=sys.intern(customer),
        status=sys.intern(_field(obj, "status", str)),
        currency=currency,
        items=shared.items(parsed_items) if shared and all_shared else tuple(parsed_items),
        discounts=_discounts(obj, coupons, known_discounts),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        cancel_at=_field(obj, "cancel_at", int, optional=True),
        start_date=created if start_date == created else start_date,
        ended_at=_field(obj, "ended_at", int, optional=True),
        trial_start=_field(obj, "trial_start", int, optional=True),
        trial_end=_field(obj, "trial_end", int, optional=True),
        created=created,
    )


def names_only_known(obj: dict, prices: dict[str, Price], coupons: dict[str, Coupon],
                     known_discounts: KnownDiscounts) -> bool:
    """Whether parsing this subscription (or a past state of it) takes every price
    and coupon from the lists and every discount named by id from
    `known_discounts`: then parsing it again later, with more known, gives the
    same record."""
    items = (obj.get("items") or {}).get("data") or []
    if any(not isinstance(item, dict) or (item.get("price") or {}).get("id") not in prices
           for item in items):
        return False
    for discount in discounts_on(obj):
        if isinstance(discount, str):
            discount = known_discounts.get(discount)
        if _known_coupon(discount) not in coupons:
            return False
    return True


def _known_coupon(discount: Any) -> str | None:
    if isinstance(discount, Discount):
        return discount.coupon.id
    if not isinstance(discount, dict):
        return None
    try:
        return coupon_id(discount)
    except MalformedObject:
        return None


def parse_charge(obj: dict) -> Charge:
    return Charge(
        id=_field(obj, "id", str),
        status=_field(obj, "status", str),
        amount=Decimal(_field(obj, "amount", int)),
        currency=_currency(obj),
        created=_field(obj, "created", int),
    )


def embedded_list_is_partial(obj: dict, name: str) -> bool:
    """Whether a list embedded in an object (an invoice's `lines`) has more pages."""
    return bool(_field(obj, name, dict).get("has_more"))


def parse_invoice_lines(invoice: dict, lines: list[dict] | None = None) -> list[InvoiceLine]:
    """The subscription lines of an invoice (dahlia: `parent.subscription_item_details`),
    after their own discounts. `lines` replaces the embedded list when paged separately."""
    customer = _field(invoice, "customer", (str, dict))
    customer = customer if isinstance(customer, str) else _field(customer, "id", str)
    if lines is None:
        lines = _field(_field(invoice, "lines", dict), "data", list)
    result = []
    for line in lines:
        parent = line.get("parent") or {}
        if parent.get("type") != "subscription_item_details":
            continue
        details = parent.get("subscription_item_details") or {}
        period = _field(line, "period", dict)
        pricing = line.get("pricing") or {}
        price = (pricing.get("price_details") or {}).get("price")
        discounted = sum((Decimal(_field(d, "amount", int)) for d in line.get("discount_amounts") or []),
                         Decimal(0))
        amount = _minor_amount(_field(line, "amount", int))
        price_id = price if isinstance(price, str) else (price or {}).get("id")
        result.append(InvoiceLine(  # interned: a year of lines names the same ones again
            customer=sys.intern(customer),
            currency=_currency(line),
            amount=amount - discounted if discounted else amount,
            period_start=_field(period, "start", int),
            period_end=_field(period, "end", int),
            price_id=_interned(price_id),
            proration=bool(details.get("proration")),
            subscription=_interned(details.get("subscription")),
            subscription_item=_interned(details.get("subscription_item")),
        ))
    return result


@lru_cache(maxsize=4096)
def _minor_amount(value: int) -> Decimal:
    """An amount as a Decimal, one object per value (Decimal is immutable): the
    year of invoice lines the 1y cohort keeps bills the same few hundred amounts."""
    return Decimal(value)


def _interned(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def parse_refund(obj: dict) -> Refund:
    return Refund(id=_field(obj, "id", str), status=_field(obj, "status", str),
                  amount=Decimal(_field(obj, "amount", int)),
                  currency=_currency(obj), created=_field(obj, "created", int))


def parse_dispute(obj: dict) -> Dispute:
    return Dispute(id=_field(obj, "id", str), status=_field(obj, "status", str),
                   amount=Decimal(_field(obj, "amount", int)),
                   currency=_currency(obj), created=_field(obj, "created", int))
