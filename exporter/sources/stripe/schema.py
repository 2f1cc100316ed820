"""The fields of Stripe's subscription JSON that the KPIs read, as msgspec types.

A page of 100 listed subscriptions is some 300 KB of JSON, most of it fields
no KPI reads (the legacy `plan` on every item, whole price objects, payment
and invoice settings). Decoded into these types, the decoder skips the rest
without building it, and the page becomes plain dicts of the fields below
only (`msgspec.to_builtins`), which parse.py reads as it reads any other:
one parser, for listings and event payloads alike. compact.py keeps the same
fields of what events hold.

The objects are typed as containers only: every leaf is `Any`, and what a
value must be is parse.py's to check (MalformedObject names the field). A
container of the wrong kind (an item list that is a string) fails the page
as malformed, as parse.py would fail it. A field that is absent stays absent
(UNSET), and a null stays null.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec
from msgspec import UNSET, UnsetType

from exporter.http import Decode, MalformedBody

# gc=False: made and dropped within a page's decoding, they need no tracking.
_OPTIONS = {"omit_defaults": True, "gc": False}


class Coupon(msgspec.Struct, **_OPTIONS):
    id: Any = UNSET
    object: Any = UNSET
    duration: Any = UNSET
    percent_off: Any = UNSET
    amount_off: Any = UNSET
    currency: Any = UNSET
    currency_options: Any = UNSET
    applies_to: Any = UNSET


class DiscountSource(msgspec.Struct, **_OPTIONS):
    coupon: Union[str, Coupon, None, UnsetType] = UNSET
    type: Any = UNSET


class Discount(msgspec.Struct, **_OPTIONS):
    id: Any = UNSET
    object: Any = UNSET
    coupon: Union[str, Coupon, None, UnsetType] = UNSET  # API versions before 2025-09-30
    source: Union[DiscountSource, None, UnsetType] = UNSET
    end: Any = UNSET


Discounts = Union[list[Union[str, Discount]], None, UnsetType]


class Recurring(msgspec.Struct, **_OPTIONS):
    interval: Any = UNSET
    interval_count: Any = UNSET
    usage_type: Any = UNSET


class Price(msgspec.Struct, **_OPTIONS):
    id: Any = UNSET
    object: Any = UNSET
    type: Any = UNSET
    currency: Any = UNSET
    recurring: Union[Recurring, None, UnsetType] = UNSET
    billing_scheme: Any = UNSET
    tiers: Any = UNSET
    tiers_mode: Any = UNSET
    unit_amount: Any = UNSET
    unit_amount_decimal: Any = UNSET
    transform_quantity: Any = UNSET
    product: Any = UNSET  # an id, or the product when expanded
    currency_options: Any = UNSET


class Item(msgspec.Struct, **_OPTIONS):
    id: Any = UNSET
    object: Any = UNSET
    price: Union[Price, None, UnsetType] = UNSET
    quantity: Any = UNSET
    discounts: Discounts = UNSET


class ItemList(msgspec.Struct, **_OPTIONS):  # not `url`: a string per subscription
    object: Any = UNSET
    data: Union[list[Item], None, UnsetType] = UNSET
    has_more: Any = UNSET


class Subscription(msgspec.Struct, **_OPTIONS):
    id: Any = UNSET
    object: Any = UNSET
    customer: Any = UNSET  # an id, or the customer when expanded
    status: Any = UNSET
    currency: Any = UNSET
    items: Union[ItemList, None, UnsetType] = UNSET
    discounts: Discounts = UNSET
    cancel_at_period_end: Any = UNSET
    cancel_at: Any = UNSET
    canceled_at: Any = UNSET
    created: Any = UNSET
    start_date: Any = UNSET
    ended_at: Any = UNSET
    trial_start: Any = UNSET
    trial_end: Any = UNSET


class SubscriptionList(msgspec.Struct, **_OPTIONS):
    object: Any = UNSET
    data: Union[list[Subscription], None, UnsetType] = UNSET
    has_more: Any = UNSET


def fields(struct: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(struct.__struct_fields__)


def _decoder(struct: type[msgspec.Struct]) -> Decode:
    decoder = msgspec.json.Decoder(struct)

    def decode(body: bytes) -> Any:
        try:
            return msgspec.to_builtins(decoder.decode(body))
        except msgspec.ValidationError as exc:  # "Expected `array`, got `str` - at `$.data`"
            raise MalformedBody(str(exc)) from None
    decode.__doc__ = f"A JSON body as plain dicts of the fields of {struct.__name__} only."
    return decode


subscription_list = _decoder(SubscriptionList)
subscription = _decoder(Subscription)
