"""Stripe API objects for tests, built from Stripe's own dahlia fixtures
(a subset of Stripe's stripe-mock fixtures3.json, kept in tests/fixtures/stripe_dahlia.json).

Each builder deep-copies a fixture object and changes
only what a test cares about, so the shapes stay those of the real API.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FIXTURES_PATH = Path(__file__).parent / "fixtures" / "stripe_dahlia.json"
_FIXTURES = json.loads(FIXTURES_PATH.read_text())["resources"]


def fixture(name: str) -> dict:
    return copy.deepcopy(_FIXTURES[name])


def price(id, amount, *, currency="usd", interval="month", count=1, usage="licensed",
          tiers=None, tiers_mode=None) -> dict:
    obj = fixture("price")
    obj.update(id=id, currency=currency, unit_amount=amount, transform_quantity=None,
               unit_amount_decimal=None if amount is None else str(amount))
    obj["recurring"].update(interval=interval, interval_count=count, usage_type=usage)
    if tiers is not None:
        obj.update(billing_scheme="tiered", tiers_mode=tiers_mode, tiers=tiers)
    return obj


def coupon(id, *, percent_off=None, amount_off=None, currency=None, duration="forever") -> dict:
    obj = fixture("coupon")
    obj.update(id=id, percent_off=percent_off, amount_off=amount_off, currency=currency,
               duration=duration)
    return obj


def discount(id, coupon, *, end=None) -> dict:
    """`coupon`: an id, or a coupon object when source.coupon was expanded."""
    obj = fixture("discount")
    obj.update(id=id, end=end)
    obj["source"]["coupon"] = coupon
    return obj


def item(id, price_obj, quantity=1, discounts=()) -> dict:
    obj = copy.deepcopy(_FIXTURES["subscription"]["items"]["data"][0])
    price_obj = copy.deepcopy(price_obj)
    price_obj.pop("tiers", None)  # embedded prices never carry tiers
    obj.update(id=id, price=price_obj, quantity=quantity, discounts=list(discounts))
    return obj


def subscription(id, customer, items, *, status="active", currency="usd", discounts=(),
                 cancel_at_period_end=False, items_has_more=False, created=1_700_000_000,
                 ended_at=None, trial_start=None, trial_end=None) -> dict:
    obj = fixture("subscription")
    obj.update(id=id, customer=customer, status=status, currency=currency,
               discounts=list(discounts), cancel_at_period_end=cancel_at_period_end,
               cancel_at=None, created=created, start_date=created, ended_at=ended_at,
               canceled_at=ended_at, trial_start=trial_start, trial_end=trial_end)
    obj["items"].update(data=list(items), has_more=items_has_more)
    return obj


def charge(id, amount, *, status="failed", currency="usd", created=0) -> dict:
    obj = fixture("charge")
    obj.update(id=id, amount=amount, status=status, currency=currency, created=created)
    return obj


def page(data, *, has_more=False, url="/v1/x") -> dict:
    return {"object": "list", "url": url, "has_more": has_more, "data": list(data)}


def event(id, kind, obj, created, previous=None) -> dict:
    """An event as /v1/events lists it (dahlia: discounts inside are ids)."""
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": id, "object": "event", "api_version": "2026-07-29.dahlia", "created": created,
            "data": data, "livemode": False, "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None}, "type": kind}
