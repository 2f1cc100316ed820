"""An in-memory collection of Stripe objects, shaped like API version 2026-07-29.dahlia.

`StripeStore` holds plain dicts exactly as the API would return them (before
expansion), one table per collection, keyed by id in creation order. The
`add_*` helpers build complete objects with sensible defaults, so a test can
describe a tiny company in a few lines:

    store = StripeStore(now=1_760_000_000)
    cus = store.add_customer("Acme Ltd")
    pro = store.add_price(19900, product="Pro", nickname="Pro monthly")
    off = store.add_coupon(percent_off=20)
    store.add_subscription(cus, [(pro, 3)], coupons=[off])

Design notes:
- Tables are generic (`add(collection, obj)`, `get`, `list`), so a later
  feature can register more collections (events, invoices) without touching
  the helpers. The helpers never read the wall clock: `created` defaults to
  `store.now`, so a store is deterministic for a seed and a `now`.
- Tiers are kept beside prices (`price_tiers`), because Stripe only returns them
  when a price list is expanded with `data.tiers`; subscription items embed a
  copy of the price without them.
- Objects are not mutated once built, except a coupon's `times_redeemed` and a
  customer's `currency`/`delinquent`, which change under the store's lock as
  Stripe would change them.
"""

from __future__ import annotations

import calendar
import copy
import random
import string
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterable

API_VERSION = "2026-07-29.dahlia"

COLLECTIONS = (
    "customers",
    "products",
    "prices",
    "coupons",
    "discounts",
    "subscriptions",
    "subscription_items",
    "charges",
)

SUBSCRIPTION_STATUSES = (
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "trialing",
    "paused",
)

# Currencies whose amounts are whole units (no minor unit), per Stripe's docs.
ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)

DAY = 86_400
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


# --------------------------------------------------------------------------- time


def add_interval(ts: int, interval: str, count: int) -> int:
    """`ts` moved by `count` intervals, months clamped to the month's length.

    Stripe keeps the anchor's day of month: Jan 31 + 1 month = Feb 28 (29).
    """
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    dt = datetime.fromtimestamp(ts, timezone.utc)
    index = dt.year * 12 + (dt.month - 1) + months
    year, month = divmod(index, 12)
    day = min(dt.day, calendar.monthrange(year, month + 1)[1])
    return int(dt.replace(year=year, month=month + 1, day=day).timestamp())


def period_containing(anchor: int, ref: int, interval: str, count: int) -> tuple[int, int]:
    """The billing period [start, end) of an anchor/interval that contains `ref`."""
    if ref < anchor:
        return add_interval(anchor, interval, -count), anchor
    if interval in ("day", "week"):
        step = count * (DAY if interval == "day" else 7 * DAY)
        k = (ref - anchor) // step
    else:
        months = count * (12 if interval == "year" else 1)
        a = datetime.fromtimestamp(anchor, timezone.utc)
        r = datetime.fromtimestamp(ref, timezone.utc)
        k = max(0, ((r.year - a.year) * 12 + r.month - a.month) // months - 1)
        while add_interval(anchor, interval, (k + 1) * count) <= ref:
            k += 1
    return add_interval(anchor, interval, k * count), add_interval(anchor, interval, (k + 1) * count)


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


class StripeStore:
    """Thread-safe, in-memory Stripe objects as plain dicts, in creation order."""

    def __init__(self, seed: int = 0, now: float | None = None, livemode: bool = False):
        self.now = int(time.time() if now is None else now)
        self.livemode = livemode
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._tables: dict[str, dict[str, dict]] = {name: {} for name in COLLECTIONS}
        self._newest_first: dict[str, list[dict]] = {}
        # Stripe's long ids carry a fragment of the account id, as real ones do.
        self.account_fragment = "".join(self._rng.choices(_ALPHABET, k=10))
        self.price_tiers: dict[str, list[dict]] = {}

    # ------------------------------------------------------------------ tables

    def register_collection(self, name: str) -> None:
        """Add an empty table (for future object kinds such as events)."""
        with self._lock:
            self._tables.setdefault(name, {})

    @property
    def collections(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._tables)

    def add(self, collection: str, obj: dict) -> dict:
        """Store a complete object under its id; returns it."""
        with self._lock:
            table = self._tables[collection]
            if obj["id"] in table:
                raise ValueError(f"duplicate id {obj['id']} in {collection}")
            table[obj["id"]] = obj
            self._newest_first.pop(collection, None)
            return obj

    def get(self, collection: str, object_id: str) -> dict | None:
        with self._lock:
            return self._tables[collection].get(object_id)

    def list(self, collection: str) -> list[dict]:
        """All objects newest first (by `created`, ties by insertion), like Stripe lists."""
        with self._lock:
            cached = self._newest_first.get(collection)
            if cached is None:
                table = self._tables[collection]
                # sorted() is stable with reverse=True too, so among equal
                # `created` the later-inserted object stays first.
                cached = sorted(reversed(list(table.values())),
                                key=lambda o: o.get("created", 0), reverse=True)
                self._newest_first[collection] = cached
            return list(cached)

    def count(self, collection: str) -> int:
        with self._lock:
            return len(self._tables[collection])

    def objects(self, collection: str) -> list[dict]:
        """All objects in insertion (creation) order."""
        with self._lock:
            return list(self._tables[collection].values())

    def snapshot(self, objs: Any) -> Any:
        """A deep copy taken under the lock (what the HTTP server serves)."""
        with self._lock:
            return copy.deepcopy(objs)

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

    # ------------------------------------------------------------------ subscriptions

    def add_subscription(self, customer: Any, items: Iterable[Any], *, status: str = "active",
                         coupons: Iterable[Any] = (), cancel_at_period_end: bool = False,
                         created: int | None = None, trial_end: int | None = None,
                         trial_start: int | None = None, canceled_at: int | None = None,
                         ended_at: int | None = None, billing_cycle_anchor: int | None = None,
                         cancellation_reason: str | None = None,
                         collection_method: str = "charge_automatically",
                         discount_start: int | None = None, metadata: dict | None = None,
                         id: str | None = None) -> dict:
        """A subscription with its items and discounts.

        `items`: price ids/dicts, or `(price, quantity)` / `(price, quantity, [coupons])`
        tuples (item-level coupons). `coupons`: subscription-level coupons (ids or
        dicts). Periods are computed on each item from the billing anchor and the
        item's price interval so that `store.now` falls in the current period;
        trialing subscriptions use the trial as their period, canceled ones their
        last period. Discounts start at `discount_start` (default `created`).
        """
        with self._lock:
            if status not in SUBSCRIPTION_STATUSES:
                raise ValueError(f"status must be one of {SUBSCRIPTION_STATUSES}, not {status!r}")
            cus = self._resolve("customers", customer, "customer")
            specs = [self._item_spec(i) for i in items]
            if not specs:
                raise ValueError("a subscription needs at least one item")
            now = self.now
            created = now if created is None else int(created)
            sub_id = id or self.new_id("sub", "subscriptions")

            if status in ("trialing", "paused") or trial_end is not None:
                trial_start = created if trial_start is None else trial_start
                if trial_end is None:
                    days = specs[0][0]["recurring"]["trial_period_days"] or 14
                    trial_end = trial_start + days * DAY
            if status == "incomplete_expired" and ended_at is None:
                ended_at = created + 23 * 3600
            if status == "canceled":
                canceled_at = canceled_at or ended_at or now
                ended_at = ended_at or canceled_at
            anchor = billing_cycle_anchor or trial_end or created
            # Which moment the current period must contain.
            ref = ended_at - 1 if ended_at else now

            sub_items = []
            for price, quantity, item_coupons in specs:
                rec = price["recurring"]
                if rec is None:
                    raise ValueError(f"price {price['id']} is one-time; subscriptions need recurring prices")
                if status in ("trialing", "paused"):
                    start, end = trial_start, trial_end
                elif status in ("incomplete", "incomplete_expired"):
                    start, end = created, add_interval(created, rec["interval"], rec["interval_count"])
                elif ref < anchor:  # a first, prorated period up to a later anchor
                    start, end = created, anchor
                else:
                    start, end = period_containing(anchor, ref, rec["interval"], rec["interval_count"])
                item_id = self.new_id("si", "subscription_items", short=True)
                item = {
                    "id": item_id,
                    "object": "subscription_item",
                    "billing_thresholds": None,
                    "created": created,
                    "current_period_end": end,
                    "current_period_start": start,
                    "discounts": [
                        self.add_discount(c, customer=cus["id"], start=discount_start or created,
                                          subscription=sub_id, subscription_item=item_id)["id"]
                        for c in item_coupons
                    ],
                    "metadata": {},
                    "plan": _plan_from_price(price),
                    "price": copy.deepcopy(price),
                    "quantity": quantity,
                    "subscription": sub_id,
                    "tax_rates": [],
                }
                if rec["usage_type"] == "metered":
                    del item["quantity"]  # metered items bill usage, not a quantity
                sub_items.append(self.add("subscription_items", item))

            discounts = [
                self.add_discount(c, customer=cus["id"], start=discount_start or created,
                                  subscription=sub_id)["id"]
                for c in coupons
            ]
            period_end = max(i["current_period_end"] for i in sub_items)
            cancel_at = None
            if cancel_at_period_end and status != "canceled":
                cancel_at = period_end
                canceled_at = canceled_at or now
            currency = specs[0][0]["currency"]
            if cus["currency"] is None:
                cus["currency"] = currency
            if status in ("past_due", "unpaid"):
                cus["delinquent"] = True
            if cancellation_reason is None and canceled_at:
                cancellation_reason = "cancellation_requested"
            if trial_end is not None:
                end_behavior = "pause" if status == "paused" else "create_invoice"
            else:
                end_behavior = "create_invoice"

            return self.add("subscriptions", {
                "id": sub_id,
                "object": "subscription",
                "application": None,
                "application_fee_percent": None,
                "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
                "billing_cycle_anchor": anchor,
                "billing_cycle_anchor_config": None,
                "billing_mode": {"flexible": None, "type": "classic"},
                "billing_schedules": [],
                "billing_thresholds": None,
                "cancel_at": cancel_at,
                "cancel_at_period_end": bool(cancel_at_period_end and status != "canceled"),
                "canceled_at": canceled_at,
                "cancellation_details": {"comment": None, "feedback": None,
                                         "reason": cancellation_reason},
                "collection_method": collection_method,
                "created": created,
                "currency": currency,
                "customer": cus["id"],
                "customer_account": None,
                "days_until_due": 30 if collection_method == "send_invoice" else None,
                "default_payment_method": None,
                "default_source": None,
                "default_tax_rates": [],
                "description": None,
                "discounts": discounts,
                "ended_at": ended_at,
                "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
                "items": {
                    "object": "list",
                    "data": sub_items,
                    "has_more": False,
                    "url": f"/v1/subscription_items?subscription={sub_id}",
                },
                "latest_invoice": None,
                "livemode": self.livemode,
                "managed_payments": {"enabled": False},
                "metadata": dict(metadata or {}),
                "next_pending_invoice_item_invoice": None,
                "on_behalf_of": None,
                "pause_collection": None,
                "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                     "save_default_payment_method": "off"},
                "pending_invoice_item_interval": None,
                "pending_setup_intent": None,
                "pending_update": None,
                "schedule": None,
                "start_date": created,
                "status": status,
                "test_clock": None,
                "transfer_data": None,
                "trial_end": trial_end,
                "trial_settings": {"end_behavior": {"missing_payment_method": end_behavior}},
                "trial_start": trial_start,
            })

    def _item_spec(self, spec: Any) -> tuple[dict, int, list]:
        """(price, quantity, coupons) from an id, a price dict, a tuple or an item dict."""
        if isinstance(spec, str) or (isinstance(spec, dict) and spec.get("object") == "price"):
            return self._resolve("prices", spec, "price"), 1, []
        if isinstance(spec, dict):
            return (self._resolve("prices", spec["price"], "price"), spec.get("quantity", 1),
                    list(spec.get("coupons", ())))
        price, quantity, *rest = spec
        return self._resolve("prices", price, "price"), quantity, list(rest[0] if rest else ())

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


def _plan_from_price(price: dict) -> dict:
    """The legacy `plan` view of a recurring price that subscription items still carry."""
    rec = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": rec["interval"],
        "interval_count": rec["interval_count"],
        "livemode": price["livemode"],
        "metadata": dict(price["metadata"]),
        "meter": rec["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": copy.deepcopy(price["transform_quantity"]),
        "trial_period_days": rec["trial_period_days"],
        "usage_type": rec["usage_type"],
    }
