"""An in-memory collection of Stripe objects, shaped like API version 2026-07-29.dahlia.

`StripeStore` holds plain dicts exactly as the API would return them (before
expansion), one table per collection, keyed by id in creation order. The
`add_*` helpers build complete objects with sensible defaults, so a test can
describe a tiny company in a few lines:

    store = StripeStore(now=1_760_000_000)
    cus = store.add_customer("Acme Ltd")
    pro = store.add_price(19900, product="Pro", nickname="Pro monthly")
    off = store.add_coupon(percent_off=20)
    sub = store.add_subscription(cus, [(pro, 3)], coupons=[off], created=store.now - 90 * DAY)
    store.change_subscription(sub, store.now - 10 * DAY, items=[(pro, 5)])

Design notes:
- Subscriptions are histories (see `subscriptions.py` and `history.py`): the
  object in the table is the timeline rendered at `store.now`; events and
  invoices are derived from the timelines, lazily, and served from the
  virtual collections `events` and `invoices` (`index`, `materialize`).
- Tables are generic (`add(collection, obj)`, `get`, `list`). The helpers
  never read the wall clock: `created` defaults to `store.now`, so a store is
  deterministic for a seed and a `now`; `advance(t)` moves the clock.
- Tiers are kept beside prices (`price_tiers`), because Stripe only returns them
  when a price list is expanded with `data.tiers`; subscription items embed a
  copy of the price without them.
- Objects in the tables are replaced, never mutated once served (except a
  coupon's `times_redeemed`), so a reader holding one sees a consistent object.
  Discounts removed from subscriptions stay in the discount table.
"""

from __future__ import annotations

import copy
import random
import string
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterable

from exporter.simulator import history, invoices
from exporter.simulator.payments import Payments
from exporter.simulator.periods import DAY, add_interval, period_containing
from exporter.simulator.subscriptions import SUBSCRIPTION_STATUSES, SubscriptionHistories

API_VERSION = history.API_VERSION
# Re-exported: older code imports the period helpers and statuses from here.
__all__ = ["API_VERSION", "COLLECTIONS", "DAY", "SUBSCRIPTION_STATUSES", "StripeStore",
           "VIRTUAL_COLLECTIONS", "add_interval", "format_amount", "period_containing"]

COLLECTIONS = (
    "customers",
    "products",
    "prices",
    "coupons",
    "discounts",
    "subscriptions",
    "subscription_items",
    "charges",
    "refunds",
    "disputes",
)
# Derived from the timelines on request, never stored as objects.
VIRTUAL_COLLECTIONS = ("events", "invoices")

# Currencies whose amounts are whole units (no minor unit), per Stripe's docs.
ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)

_ALPHABET = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits

# Charge failure codes -> (failure_message, default outcome reason).
FAILURES = {
    "card_declined": ("Your card was declined.", "generic_decline"),
    "insufficient_funds": ("Your card has insufficient funds.", "insufficient_funds"),
    "expired_card": ("Your card has expired.", "expired_card"),
    "incorrect_cvc": ("Your card's security code is incorrect.", "incorrect_cvc"),
    "processing_error": (
        "An error occurred while processing your card. Try again in a little bit.",
        "processing_error",
    ),
}
_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "do_not_honor": "Your card was declined.",
    "generic_decline": "Your card was declined.",
}


def format_amount(amount: int, currency: str) -> str:
    """2500 usd -> "$25.00"; 7000 jpy -> "¥7,000" (for default names)."""
    symbol = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}.get(currency, currency.upper() + " ")
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{symbol}{amount:,}"
    return f"{symbol}{amount / 100:,.2f}"


def _decimal_str(value: Any) -> str | None:
    """Stripe's *_decimal fields: the amount as a string, "2000" or "0.5"."""
    if value is None:
        return None
    text = str(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# --------------------------------------------------------------------------- store


class StripeStore(SubscriptionHistories, Payments):
    """Thread-safe, in-memory Stripe objects as plain dicts, in creation order."""

    def __init__(self, seed: int = 0, now: float | None = None, livemode: bool = False):
        self.now = int(time.time() if now is None else now)
        self.livemode = livemode
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._tables: dict[str, dict[str, dict]] = {name: {} for name in COLLECTIONS}
        # Per collection: its objects newest first, and id -> position in that list.
        self._newest_first: dict[str, tuple[list[dict], dict[str, int]]] = {}
        # Stripe's long ids carry a fragment of the account id, as real ones do.
        self.account_fragment = "".join(self._rng.choices(_ALPHABET, k=10))
        self.price_tiers: dict[str, list[dict]] = {}
        # Histories: sub id -> Timeline (creation order), customer -> sub ids.
        self.timelines: dict[str, history.Timeline] = {}
        self._subs_of: dict[str, list[str]] = {}
        self.version = 0  # bumped by every change; keys the derived indexes
        self.invoice_cache: dict[str, tuple] = {}
        self._index_cache: dict[str, tuple] = {}
        self._batching = False
        self._dirty: set[str] = set()
        # Events of charges, refunds and disputes changing, as rendered (payments.py).
        self.stored_events: list[dict] = []

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read several things consistently while a ticker writes."""
        return self._lock

    # ------------------------------------------------------------------ tables

    def register_collection(self, name: str) -> None:
        """Add an empty table (for more object kinds)."""
        with self._lock:
            self._tables.setdefault(name, {})

    @property
    def collections(self) -> tuple[str, ...]:
        with self._lock:
            return (*self._tables, *VIRTUAL_COLLECTIONS)

    def add(self, collection: str, obj: dict) -> dict:
        """Store a complete object under its id; returns it."""
        with self._lock:
            table = self._tables[collection]
            if obj["id"] in table:
                raise ValueError(f"duplicate id {obj['id']} in {collection}")
            table[obj["id"]] = obj
            self._newest_first.pop(collection, None)
            self.version += 1
            return obj

    def _replace(self, collection: str, obj: dict) -> dict:
        """Put a new version of an object in place of the old one (same position)."""
        self._tables[collection][obj["id"]] = obj
        self._newest_first.pop(collection, None)
        self.version += 1
        return obj

    def get(self, collection: str, object_id: str) -> dict | None:
        with self._lock:
            if collection in VIRTUAL_COLLECTIONS:
                stubs, positions = self.index(collection)
                position = positions.get(object_id)
                return None if position is None else self.materialize(collection, stubs[position])
            return self._tables[collection].get(object_id)

    def list(self, collection: str) -> list[dict]:
        """All objects newest first (by `created`, ties by insertion), like Stripe lists."""
        with self._lock:
            if collection in VIRTUAL_COLLECTIONS:
                return [self.materialize(collection, s) for s in self.index(collection)[0]]
            return list(self.listing(collection)[0])

    def listing(self, collection: str) -> tuple[list[dict], dict[str, int]]:
        """A stored collection newest first, and id -> position: not copied (read it
        under the lock; it is replaced, never changed, when the collection changes).
        The positions let a page after a cursor start there, not scan to it."""
        with self._lock:
            cached = self._newest_first.get(collection)
            if cached is None:
                table = self._tables[collection]
                # sorted() is stable with reverse=True too, so among equal
                # `created` the later-inserted object stays first.
                ordered = sorted(reversed(list(table.values())),
                                 key=lambda o: o.get("created", 0), reverse=True)
                cached = ordered, {o["id"]: k for k, o in enumerate(ordered)}
                self._newest_first[collection] = cached
            return cached

    def count(self, collection: str) -> int:
        with self._lock:
            if collection in VIRTUAL_COLLECTIONS:
                return len(self.index(collection)[0])
            return len(self._tables[collection])

    def objects(self, collection: str) -> list[dict]:
        """All objects in insertion (creation) order (oldest first for derived ones)."""
        with self._lock:
            if collection in VIRTUAL_COLLECTIONS:
                return self.list(collection)[::-1]
            return list(self._tables[collection].values())

    def snapshot(self, objs: Any) -> Any:
        """A deep copy taken under the lock (what the HTTP server serves)."""
        with self._lock:
            return copy.deepcopy(objs)

    def discount_table(self) -> dict[str, dict]:
        """The discount table itself (no copy): for the history code, under the lock."""
        return self._tables["discounts"]

    # ------------------------------------------------------------------ derived collections

    def index(self, collection: str) -> tuple[list, dict[str, int]]:
        """Light entries of a derived collection, newest first, and id -> position.

        Entries have `.id`, `.created` and `.get(field)` for the list filters;
        `materialize` turns one into the API object. Rebuilt when anything changed.
        """
        with self._lock:
            key = (self.version, self.now)
            cached = self._index_cache.get(collection)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
            if collection == "events":
                stubs = history.event_index(self)
            elif collection == "invoices":
                stubs = invoices.invoice_index(self)
            else:
                raise KeyError(f"{collection} is not a derived collection")
            positions = {s.id: k for k, s in enumerate(stubs)}
            self._index_cache[collection] = (key, stubs, positions)
            return stubs, positions

    def materialize(self, collection: str, stub: Any) -> dict:
        with self._lock:
            if collection == "events":
                return history.materialize_event(self, stub)
            return invoices.materialize_invoice(self, stub)

    def invoice_lines(self, invoice_id: str) -> list[dict] | None:
        """Every line of an invoice, or None if there is no such invoice."""
        with self._lock:
            stubs, positions = self.index("invoices")
            position = positions.get(invoice_id)
            return None if position is None else invoices.invoice_lines(self, stubs[position])

    def events(self) -> list[dict]:
        """The events Stripe still serves (last 30 days), newest first."""
        return self.list("events")

    def invoices(self, subscription: Any = None, status: str | None = None) -> list[dict]:
        """Invoices created up to now, newest first, optionally of one subscription/status."""
        with self._lock:
            sub_id = subscription["id"] if isinstance(subscription, dict) else subscription
            return [self.materialize("invoices", s) for s in self.index("invoices")[0]
                    if (sub_id is None or s.subscription == sub_id)
                    and (status is None or s.status == status)]

    def _view(name: str):  # noqa: N805 - builds the read-only views below
        def view(self) -> dict[str, dict]:
            with self._lock:
                return dict(self._tables[name])
        view.__doc__ = f"The {name} table: a copy of id -> object, in creation order."
        return property(view)

    # Convenience views: store.subscriptions["sub_..."], len(store.charges)
    customers = _view("customers")
    products = _view("products")
    prices = _view("prices")
    coupons = _view("coupons")
    discounts = _view("discounts")
    subscriptions = _view("subscriptions")
    subscription_items = _view("subscription_items")
    charges = _view("charges")
    refunds = _view("refunds")
    disputes = _view("disputes")
    del _view

    # ------------------------------------------------------------------ ids

    def new_id(self, prefix: str, collection: str | None = None, short: bool = False) -> str:
        """`cus_QXg1o8vcGmoR32` (short) or `sub_1Pgc6rB7WZ01zgkWNy0Cn5nw` (long) style."""
        while True:
            if short:
                body = "".join(self._rng.choices(_ALPHABET, k=14))
            else:
                body = ("1" + "".join(self._rng.choices(_ALPHABET, k=5))
                        + self.account_fragment + "".join(self._rng.choices(_ALPHABET, k=8)))
            object_id = f"{prefix}_{body}"
            if collection is None or object_id not in self._tables[collection]:
                return object_id

    def _resolve(self, collection: str, ref: Any, what: str) -> dict:
        object_id = ref["id"] if isinstance(ref, dict) else ref
        obj = self._tables[collection].get(object_id)
        if obj is None:
            raise KeyError(f"no such {what}: {object_id!r}")
        return obj


    # ------------------------------------------------------------------ customers and products

    def add_customer(self, name: str | None = None, email: str | None = None, *,
                     currency: str | None = None, created: int | None = None,
                     description: str | None = None, country: str | None = None,
                     metadata: dict | None = None, id: str | None = None) -> dict:
        """A customer. `currency` stays None until the first subscription sets it, as in Stripe."""
        with self._lock:
            object_id = id or self.new_id("cus", "customers", short=True)
            if email is None and name:
                email = "billing@" + "".join(c for c in name.lower() if c.isalnum())[:20] + ".example"
            return self.add("customers", {
                "id": object_id,
                "object": "customer",
                "address": {"city": None, "country": country, "line1": None, "line2": None,
                            "postal_code": None, "state": None},
                "balance": 0,
                "created": self.now if created is None else int(created),
                "currency": currency,
                "customer_account": None,
                "default_source": None,
                "delinquent": False,
                "description": description,
                "discount": None,
                "email": email,
                "invoice_prefix": "".join(self._rng.choices(_UPPER, k=8)),
                "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                                     "footer": None, "rendering_options": None},
                "livemode": self.livemode,
                "metadata": dict(metadata or {}),
                "name": name,
                "next_invoice_sequence": 1,
                "phone": None,
                "preferred_locales": [],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": None,
            })

    def add_product(self, name: str, *, description: str | None = None,
                    unit_label: str | None = None, active: bool = True,
                    created: int | None = None, metadata: dict | None = None,
                    id: str | None = None) -> dict:
        with self._lock:
            created = self.now if created is None else int(created)
            return self.add("products", {
                "id": id or self.new_id("prod", "products", short=True),
                "object": "product",
                "active": active,
                "created": created,
                "default_price": None,
                "description": description,
                "images": [],
                "livemode": self.livemode,
                "marketing_features": [],
                "metadata": dict(metadata or {}),
                "name": name,
                "package_dimensions": None,
                "shippable": None,
                "statement_descriptor": None,
                "tax_code": None,
                "type": "service",
                "unit_label": unit_label,
                "updated": created,
                "url": None,
            })

    # ------------------------------------------------------------------ prices

    def add_price(self, unit_amount: int | None = None, currency: str = "usd",
                  interval: str | None = "month", *, interval_count: int = 1,
                  product: Any = None, nickname: str | None = None,
                  usage_type: str = "licensed", tiers: Iterable[Any] | None = None,
                  tiers_mode: str | None = None, unit_amount_decimal: Any = None,
                  transform_quantity: Any = None, lookup_key: str | None = None,
                  active: bool = True, trial_period_days: int | None = None,
                  created: int | None = None, metadata: dict | None = None,
                  id: str | None = None) -> dict:
        """A price. Amounts in the currency's minor unit (cents; whole yen for JPY).

        - `interval=None` makes a one-time price.
        - `product`: a product dict or id, or a name (a product is created);
          None creates one named after the nickname.
        - `tiers`: dicts with up_to/unit_amount/flat_amount, or tuples
          `(up_to, unit_amount[, flat_amount])`; up_to None or "inf" is the last
          tier. Tiers make the price `tiered` (`tiers_mode` default "graduated").
        - `unit_amount_decimal="0.5"` gives a sub-cent price (`unit_amount` None).
        - `transform_quantity`: {"divide_by": n, "round": "up"} or (n, "up").
        """
        with self._lock:
            if interval not in (None, "day", "week", "month", "year"):
                raise ValueError(f"interval must be day, week, month, year or None, not {interval!r}")
            if usage_type not in ("licensed", "metered"):
                raise ValueError(f"usage_type must be licensed or metered, not {usage_type!r}")
            created = self.now if created is None else int(created)
            prod = self._product_for(product, nickname, created)
            object_id = id or self.new_id("price", "prices")

            tier_list = [_tier(t) for t in tiers] if tiers is not None else None
            if tier_list is not None:
                billing_scheme, tiers_mode = "tiered", tiers_mode or "graduated"
                unit_amount = unit_amount_decimal = None
            else:
                billing_scheme, tiers_mode = "per_unit", None
                if unit_amount_decimal is not None:
                    unit_amount_decimal = _decimal_str(unit_amount_decimal)
                    if unit_amount is None and "." not in unit_amount_decimal:
                        unit_amount = int(unit_amount_decimal)
                elif unit_amount is not None:
                    unit_amount_decimal = str(int(unit_amount))
                else:
                    raise ValueError("a per_unit price needs unit_amount or unit_amount_decimal")

            if isinstance(transform_quantity, (tuple, list)):
                transform_quantity = {"divide_by": transform_quantity[0],
                                      "round": transform_quantity[1] if len(transform_quantity) > 1 else "up"}

            recurring = None
            if interval is not None:
                recurring = {
                    "interval": interval,
                    "interval_count": interval_count,
                    "meter": self.new_id("mtr") if usage_type == "metered" else None,
                    "trial_period_days": trial_period_days,
                    "usage_type": usage_type,
                }
            price = self.add("prices", {
                "id": object_id,
                "object": "price",
                "active": active,
                "billing_scheme": billing_scheme,
                "created": created,
                "currency": currency,
                "custom_unit_amount": None,
                "livemode": self.livemode,
                "lookup_key": lookup_key,
                "metadata": dict(metadata or {}),
                "nickname": nickname,
                "product": prod["id"],
                "recurring": recurring,
                "tax_behavior": "unspecified",
                "tiers_mode": tiers_mode,
                "transform_quantity": transform_quantity,
                "type": "recurring" if recurring else "one_time",
                "unit_amount": unit_amount,
                "unit_amount_decimal": unit_amount_decimal,
            })
            if tier_list is not None:
                self.price_tiers[object_id] = tier_list
            if prod["default_price"] is None and active:
                prod["default_price"] = object_id
            return price

    def _product_for(self, product: Any, nickname: str | None, created: int) -> dict:
        if isinstance(product, dict):
            return self._resolve("products", product, "product")
        if isinstance(product, str) and product in self._tables["products"]:
            return self._tables["products"][product]
        if isinstance(product, str) and product.startswith("prod_"):
            raise KeyError(f"no such product: {product!r}")
        return self.add_product(product or nickname or "Product", created=created)

    # ------------------------------------------------------------------ coupons and discounts

    def add_coupon(self, percent_off: float | None = None, amount_off: int | None = None,
                   currency: str | None = None, duration: str = "forever",
                   duration_in_months: int | None = None, *, id: str | None = None,
                   name: str | None = None, created: int | None = None,
                   redeem_by: int | None = None, max_redemptions: int | None = None,
                   valid: bool = True, metadata: dict | None = None) -> dict:
        """A coupon: exactly one of percent_off / amount_off (amount_off needs a currency,
        default usd). duration is forever, once or repeating (then duration_in_months)."""
        with self._lock:
            if (percent_off is None) == (amount_off is None):
                raise ValueError("give exactly one of percent_off or amount_off")
            if duration not in ("forever", "once", "repeating"):
                raise ValueError(f"duration must be forever, once or repeating, not {duration!r}")
            if duration == "repeating" and not duration_in_months:
                raise ValueError("a repeating coupon needs duration_in_months")
            if amount_off is not None:
                currency = currency or "usd"
            else:
                currency = None
            if name is None:
                name = (f"{percent_off:g}% off" if percent_off is not None
                        else f"{format_amount(amount_off, currency)} off")
            return self.add("coupons", {
                "id": id or "".join(self._rng.choices(_UPPER, k=8)),
                "object": "coupon",
                "amount_off": amount_off,
                "created": self.now if created is None else int(created),
                "currency": currency,
                "duration": duration,
                "duration_in_months": duration_in_months if duration == "repeating" else None,
                "livemode": self.livemode,
                "max_redemptions": max_redemptions,
                "metadata": dict(metadata or {}),
                "name": name,
                "percent_off": percent_off,
                "redeem_by": redeem_by,
                "times_redeemed": 0,
                "valid": valid,
            })

    def add_discount(self, coupon: Any, *, customer: str | None, start: int,
                     subscription: str | None = None, subscription_item: str | None = None) -> dict:
        """A discount applying `coupon` (see add_subscription; rarely called directly)."""
        with self._lock:
            coupon = self._resolve("coupons", coupon, "coupon")
            end = None
            if coupon["duration"] == "repeating":
                end = add_interval(start, "month", coupon["duration_in_months"])
            coupon["times_redeemed"] += 1
            return self.add("discounts", {
                "id": self.new_id("di", "discounts"),
                "object": "discount",
                "checkout_session": None,
                "customer": customer,
                "customer_account": None,
                "end": end,
                "invoice": None,
                "invoice_item": None,
                "promotion_code": None,
                "source": {"coupon": coupon["id"], "type": "coupon"},
                "start": start,
                "subscription": subscription,
                "subscription_item": subscription_item,
            })

    def _item_spec(self, spec: Any) -> tuple[dict, int, list | None]:
        """(price, quantity, coupons) from an id, a price dict, a tuple or an item dict;
        coupons None when the spec names none (a change then keeps the item's)."""
        if isinstance(spec, str) or (isinstance(spec, dict) and spec.get("object") == "price"):
            return self._resolve("prices", spec, "price"), 1, None
        if isinstance(spec, dict):
            coupons = spec.get("coupons")
            return (self._resolve("prices", spec["price"], "price"), spec.get("quantity", 1),
                    None if coupons is None else list(coupons))
        price, quantity, *rest = spec
        return self._resolve("prices", price, "price"), quantity, list(rest[0]) if rest else None


    # ------------------------------------------------------------------ charges

    def add_charge(self, customer: Any = None, amount: int = 1000, currency: str = "usd", *,
                   status: str = "succeeded", created: int | None = None,
                   failure_code: str | None = None, decline_code: str | None = None,
                   description: str | None = "Subscription update",
                   amount_refunded: int = 0, metadata: dict | None = None,
                   id: str | None = None) -> dict:
        """A card charge. `status` succeeded, failed or pending; a failed charge gets
        `failure_code` (default card_declined) with Stripe's message and outcome."""
        with self._lock:
            if status not in ("succeeded", "failed", "pending"):
                raise ValueError(f"status must be succeeded, failed or pending, not {status!r}")
            cus = self._resolve("customers", customer, "customer") if customer is not None else None
            rng = self._rng
            failed = status == "failed"
            failure_message = None
            if failed:
                failure_code = failure_code or "card_declined"
                failure_message, reason = FAILURES.get(failure_code, ("Your card was declined.", None))
                reason = decline_code or reason
                if decline_code:
                    failure_message = _DECLINE_MESSAGES.get(decline_code, failure_message)
                outcome = {
                    "advice_code": "try_again_later" if reason == "insufficient_funds" else None,
                    "network_advice_code": None,
                    "network_decline_code": None,
                    "network_status": "declined_by_network",
                    "reason": reason,
                    "risk_level": "normal",
                    "risk_score": rng.randint(5, 60),
                    "seller_message": f"The bank returned the decline code `{reason}`."
                    if reason else "The bank did not return any further details with this decline.",
                    "type": "issuer_declined",
                }
            else:
                outcome = {
                    "advice_code": None,
                    "network_advice_code": None,
                    "network_decline_code": None,
                    "network_status": "approved_by_network",
                    "reason": None,
                    "risk_level": "normal",
                    "risk_score": rng.randint(5, 60),
                    "seller_message": "Payment complete.",
                    "type": "authorized",
                }
            object_id = id or self.new_id("ch", "charges")
            brand = rng.choice(("visa", "visa", "mastercard", "amex"))
            succeeded = status == "succeeded"
            return self.add("charges", {
                "id": object_id,
                "object": "charge",
                "amount": amount,
                "amount_captured": amount if succeeded else 0,
                "amount_refunded": amount_refunded,
                "application": None,
                "application_fee": None,
                "application_fee_amount": None,
                "balance_transaction": self.new_id("txn") if succeeded else None,
                "billing_details": {
                    "address": {"city": None, "country": None, "line1": None, "line2": None,
                                "postal_code": None, "state": None},
                    "email": cus["email"] if cus else None,
                    "name": cus["name"] if cus else None,
                    "phone": None,
                    "tax_id": None,
                },
                "calculated_statement_descriptor": "KPI SIMULATOR",
                "captured": succeeded,
                "created": self.now if created is None else int(created),
                "currency": currency,
                "customer": cus["id"] if cus else None,
                "description": description,
                "disputed": False,
                "failure_balance_transaction": None,
                "failure_code": failure_code if failed else None,
                "failure_message": failure_message,
                "fraud_details": {},
                "livemode": self.livemode,
                "metadata": dict(metadata or {}),
                "on_behalf_of": None,
                "outcome": outcome,
                "paid": succeeded,
                "payment_intent": self.new_id("pi"),
                "payment_method": self.new_id("pm"),
                "payment_method_details": {
                    "card": {
                        "brand": brand,
                        "checks": {"address_line1_check": None, "address_postal_code_check": None,
                                   "cvc_check": "pass"},
                        "country": "US",
                        "exp_month": rng.randint(1, 12),
                        "exp_year": datetime.fromtimestamp(self.now, timezone.utc).year + rng.randint(0, 4),
                        "fingerprint": "".join(rng.choices(_ALPHABET, k=16)),
                        "funding": "credit",
                        "last4": f"{rng.randint(0, 9999):04d}",
                        "network": brand,
                        "three_d_secure": None,
                        "wallet": None,
                    },
                    "type": "card",
                },
                "receipt_email": None,
                "receipt_number": None,
                "receipt_url": None,
                "refunded": amount_refunded > 0 and amount_refunded >= amount,
                "review": None,
                "shipping": None,
                "source": None,
                "source_transfer": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": status,
                "transfer_data": None,
                "transfer_group": None,
            })


# --------------------------------------------------------------------------- builders


def _tier(spec: Any) -> dict:
    if isinstance(spec, dict):
        up_to, unit, flat = spec.get("up_to"), spec.get("unit_amount"), spec.get("flat_amount")
    else:
        up_to, unit, *rest = spec
        flat = rest[0] if rest else None
    if up_to == "inf":
        up_to = None
    return {
        "flat_amount": flat,
        "flat_amount_decimal": _decimal_str(flat),
        "unit_amount": unit,
        "unit_amount_decimal": _decimal_str(unit),
        "up_to": up_to,
    }
