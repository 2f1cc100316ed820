"""What the Stripe source keeps of the JSON it holds for a while: events until
they are parsed, and the discount events' discount objects (events.py).

A subscription is some 9 KB of Python objects, most of it fields no KPI reads
(the legacy `plan` on every item, payment and invoice settings, whole price
objects repeated on every item). `Compactor.subscription` keeps the fields that
parse.py and history.py read, and one shared copy of each embedded price and
coupon. Listed subscriptions are decoded into the same fields (schema.py) and
parsed a page at a time: only their records are kept. Nothing here is modified after it is made:
history.put_back builds new dicts, so sharing is safe.
"""

from __future__ import annotations

import sys
from typing import Any

from exporter.sources.stripe import schema

# The fields schema.py decodes listings into, kept here of what events hold.
SUBSCRIPTION_KEYS = schema.fields(schema.Subscription)
ITEM_KEYS = schema.fields(schema.Item)
ITEM_LIST_KEYS = schema.fields(schema.ItemList)
# parse_price's fields; a price's amounts, interval and tiers never change once made.
PRICE_KEYS = schema.fields(schema.Price)
RECURRING_KEYS = schema.fields(schema.Recurring)
DISCOUNT_KEYS = schema.fields(schema.Discount)
COUPON_KEYS = schema.fields(schema.Coupon)


class Compactor:
    """Compacts subscriptions, sharing one copy of each price and coupon it has seen."""

    def __init__(self) -> None:
        self._shared: dict[str, dict[str, dict]] = {"price": {}, "coupon": {}}
        # A discount's source ({"coupon": <shared coupon>, "type": "coupon"}), one per
        # coupon: by the coupon's id(), which the kept source keeps from being reused.
        self._sources: dict[tuple[Any, int], dict] = {}

    def subscription(self, obj: dict) -> dict:
        """The parts of a subscription (or of its previous_attributes) the KPIs read."""
        compact = _only(obj, SUBSCRIPTION_KEYS)
        items = compact.get("items")
        if isinstance(items, dict) and isinstance(items.get("data"), list):
            compact["items"] = {**_only(items, ITEM_LIST_KEYS),
                                "data": [self.item(i) for i in items["data"]]}
        if isinstance(compact.get("discounts"), list):
            compact["discounts"] = [self.discount(d) for d in compact["discounts"]]
        return compact

    def item(self, obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        compact = _only(obj, ITEM_KEYS)
        if isinstance(compact.get("price"), dict):
            compact["price"] = self._share("price", self._price(compact["price"]))
        if isinstance(compact.get("discounts"), list):
            compact["discounts"] = [self.discount(d) for d in compact["discounts"]]
        return compact

    def discount(self, obj: Any) -> Any:
        """A discount (an id, or an object whose coupon may be expanded)."""
        if not isinstance(obj, dict):
            return obj
        compact = _only(obj, DISCOUNT_KEYS)
        if isinstance(compact.get("object"), str):
            compact["object"] = sys.intern(compact["object"])
        if isinstance(compact.get("coupon"), dict):
            compact["coupon"] = self._share("coupon", _only(compact["coupon"], COUPON_KEYS))
        source = compact.get("source")
        if isinstance(source, dict) and isinstance(source.get("coupon"), dict):
            source = {**source, "coupon": self._share(
                "coupon", _only(source["coupon"], COUPON_KEYS))}
            if source.keys() == {"coupon", "type"} and isinstance(source["type"], str):
                source = self._sources.setdefault((source["type"], id(source["coupon"])),
                                                  source)
            compact["source"] = source
        return compact

    @staticmethod
    def _price(obj: dict) -> dict:
        compact = _only(obj, PRICE_KEYS)
        if isinstance(compact.get("recurring"), dict):
            compact["recurring"] = _only(compact["recurring"], RECURRING_KEYS)
        if isinstance(compact.get("product"), dict):
            compact["product"] = compact["product"].get("id")
        return compact

    def _share(self, kind: str, obj: dict) -> dict:
        """One copy per id: the last one seen, which replaces the one before when it
        differs (a price embedded with other fields)."""
        key = obj.get("id")
        if not isinstance(key, str):
            return obj
        copies = self._shared[kind]
        held = copies.get(key)
        if held is not None and held == obj:
            return held
        copies[key] = obj
        return obj


def _only(obj: dict, keys: frozenset[str]) -> dict:
    return {key: obj[key] for key in keys & obj.keys()}
