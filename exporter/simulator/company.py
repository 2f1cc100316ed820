"""A seeded, realistic SaaS company in Stripe, with a history, for the demo and tests.

`generate_company(seed, customers, now)` returns a `StripeStore` with:

- a catalog: Free, Starter ($49/month, $490/year), Pro ($199/seat/month, plus a
  legacy $149 price that is no longer active), Business ($4,800/year), Team
  (graduated tiers per seat), Enterprise (volume tiers with a platform fee),
  Creator Weekly, Growth Quarterly (every 3 months), a Day Pass, two metered
  add-ons (API calls billed per 1,000 with transform_quantity; SMS at a
  sub-cent unit_amount_decimal), a viewer-seat pack (per 5 seats), EUR, GBP and
  JPY prices, and a one-time onboarding price;
- coupons: percent_off forever, amount_off repeating 3 months (USD and EUR),
  percent_off repeating, a one-month retention offer, and `once` coupons;
- customers created over ~3 years with growth towards today, some with several
  subscriptions (an extra product alongside, or a new one after churning);
- a history per subscription (see history.py), reaching today's status in
  realistic proportions: mostly active (some set to cancel at period end,
  many converted from a trial), then canceled (some trials that lapsed, some
  for failed payments), trialing, past_due, incomplete_expired, unpaid,
  paused and incomplete. On the way: seat changes, plan upgrades and
  downgrades, add-ons, a switch to yearly billing, repeating discounts that
  end, payment failures that recover on a retry;
- in the last 30 days, by construction, every MRR movement (new, expansion,
  contraction, churn, reactivation, a discount ending), trials started,
  converted and lapsed, and payment failures in the last day; nobody worth
  more than 10,000 a year churns in the last 24 hours unless `large_churn`;
- invoices for the whole history (derived, see invoices.py), charges for the
  payment attempts of the last 30 days (~3 % failed, with Stripe's failure
  codes), one-off onboarding charges, a few refunds (those of the last 5 days
  may be pending) and disputes (some open);
  annual and enterprise plans are invoiced and paid by transfer, so they have
  no card charges.

Everything comes from `random.Random(seed)`: the same seed and `now` give the
same store, ids included.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from exporter.simulator import history, invoices
from exporter.simulator.payments import CLOSED_DISPUTE_STATUSES, OPEN_DISPUTE_STATUSES, \
    invoice_charges, pick_failure
from exporter.simulator.periods import DAY, HOUR, add_interval
from exporter.simulator.stripe_store import StripeStore
from exporter.simulator.ticker import LARGE_ARR, churn_large_customer, customer_arr_usd

_HOUR = HOUR
_MIN_AGE = 600  # the newest subscriptions are at least this old (seconds)
_WINDOW = 30 * DAY  # charges are generated for this many seconds before `now`
# A refund is pending for days at most (a card's succeeds at once; others within a week).
REFUND_SETTLES = 5 * DAY

# Status weights for new subscriptions (free plans are only active or canceled).
_STATUS_WEIGHTS = {
    "active": 74.0,
    "canceled": 6.0,
    "trialing": 6.0,
    "past_due": 0.5,
    "incomplete_expired": 1.5,
    "paused": 1.2,
    "unpaid": 0.3,
    "incomplete": 0.2,
}
_CURRENCY_WEIGHTS = {"usd": 78, "eur": 11, "gbp": 7, "jpy": 4}
# Plan keys (see _catalog) by currency, with their weights.
_PLAN_WEIGHTS = {
    "usd": {"free": 9, "starter_m": 24, "starter_y": 6, "pro_m": 20, "pro_legacy": 4,
            "business_y": 5, "team_m": 9, "enterprise_m": 2, "weekly": 4, "quarterly": 5,
            "day_pass": 0.6},
    "eur": {"starter_m_eur": 45, "pro_m_eur": 40, "business_y_eur": 15},
    "gbp": {"starter_m_gbp": 55, "pro_m_gbp": 45},
    "jpy": {"starter_m_jpy": 50, "pro_m_jpy": 35, "business_y_jpy": 15},
}
# Annual and enterprise plans are invoiced and paid by bank transfer (no card
# charges): the failed card payments of a day stay small, as in most SaaS books.
_INVOICED = frozenset({"business_y", "enterprise_m", "business_y_eur", "business_y_jpy"})
_RANDOM_FAILURE_RATE = 0.012  # renewals failing at first, then paid on a retry
_CHANGES_PER_MONTH = 0.15  # seat or plan changes per paying subscription
# Plan moves within a currency: upgrades (and the reverse for downgrades).
_UPGRADES = {"free": "starter_m", "starter_m": "pro_m", "pro_legacy": "pro_m",
             "starter_m_eur": "pro_m_eur", "starter_m_gbp": "pro_m_gbp",
             "starter_m_jpy": "pro_m_jpy"}
_DOWNGRADES = {"pro_m": "starter_m", "pro_m_eur": "starter_m_eur", "pro_m_gbp": "starter_m_gbp",
               "pro_m_jpy": "starter_m_jpy"}
_SEAT_LIMITS = {"pro_m": (1, 20), "pro_m_eur": (1, 20), "pro_m_gbp": (1, 20), "pro_m_jpy": (1, 20),
                "pro_legacy": (1, 20), "team_m": (1, 40), "enterprise_m": (20, 300)}

_NAME_A = ("Blue", "Bright", "Cedar", "Copper", "Delta", "Ember", "Fable", "Granite", "Harbor",
           "Iris", "Juniper", "Kite", "Lumen", "Maple", "Nimbus", "Orbit", "Pine", "Quartz",
           "River", "Summit", "Tidal", "Umber", "Vector", "Willow", "Zephyr")
_NAME_B = ("Analytics", "Bakery", "Cloud", "Dental", "Foods", "Health", "Labs", "Logistics",
           "Media", "Partners", "Robotics", "Studio", "Systems", "Travel", "Works")
_NAME_C = ("Inc", "LLC", "Ltd", "GmbH", "Co", "SAS", "KK", "")
_COUNTRY = {"usd": "US", "eur": "DE", "gbp": "GB", "jpy": "JP"}


def generate_company(seed: int = 7, customers: int = 3000, now: float | None = None, *,
                     large_churn: bool = False) -> StripeStore:
    """A deterministic (for `seed` and `now`) Stripe account of a SaaS company.

    `large_churn=True` also churns the customer worth the most (over 10,000 a
    year) a few hours before `now`, for the "large customer churned" alert.
    """
    now = int(time.time() if now is None else now)
    store = StripeStore(seed=seed, now=now)
    rng = random.Random(seed * 1_000_003 + 11)
    catalog = _catalog(store, now)
    coupons = _coupons(store, now)

    plans = [_customer_plan(rng, i, now, catalog, coupons) for i in range(customers)]
    plans.sort(key=lambda p: p["created"])
    sub_specs = []
    for plan in plans:
        cus = store.add_customer(plan["name"], plan["email"], created=plan["created"],
                                 country=_COUNTRY[plan["currency"]],
                                 metadata={"segment": plan["segment"]})
        for spec in plan["subscriptions"]:
            sub_specs.append((cus["id"], spec))

    sub_specs.sort(key=lambda s: s[1]["created"])
    with store.batch():
        for customer_id, spec in sub_specs:
            _live(rng, store, customer_id, spec, catalog, now)
        _showcase(rng, store, catalog, coupons, now)

    charge_specs = invoice_charges(store, now - _WINDOW, now)
    charge_specs.extend(_one_off_charges(rng, store, now))
    charge_specs.sort(key=lambda c: c["created"])
    for kwargs in charge_specs:
        store.add_charge(**kwargs)
    _refunds_and_disputes(rng, store, now)
    if large_churn:
        churn_large_customer(store, now - rng.randint(HOUR, 20 * HOUR))
    return store


# --------------------------------------------------------------------------- catalog


def _catalog(store: StripeStore, now: int) -> dict[str, dict]:
    """Products and prices, created before the first customer."""
    t = now - 1200 * DAY
    p = {}

    def product(name: str, unit_label: str | None = None, description: str | None = None) -> dict:
        return store.add_product(name, unit_label=unit_label, description=description, created=t)

    free = product("Free", description="Up to 2 dashboards")
    starter = product("Starter", description="For small teams getting started")
    pro = product("Pro", unit_label="seat", description="Per-seat plan for growing teams")
    business = product("Business", description="Annual plan with SSO and audit logs")
    team = product("Team", unit_label="seat", description="Graduated per-seat pricing")
    enterprise = product("Enterprise", unit_label="seat", description="Volume pricing and platform fee")
    creator = product("Creator Weekly", description="Weekly billing for freelancers")
    growth = product("Growth Quarterly", description="Billed every three months")
    day_pass = product("Day Pass", description="Single-day access for events")
    api = product("API calls", unit_label="1,000 calls", description="Metered API usage")
    sms = product("SMS notifications", unit_label="message", description="Metered SMS")
    viewers = product("Viewer seats", unit_label="5 seats", description="Read-only seats, sold per 5")
    onboarding = product("Onboarding package", description="One-time guided setup")

    def price(key: str, *args: Any, **kwargs: Any) -> None:
        p[key] = store.add_price(*args, created=t, lookup_key=key, **kwargs)

    price("free", 0, "usd", "month", product=free, nickname="Free")
    price("starter_m", 4900, "usd", "month", product=starter, nickname="Starter monthly",
          trial_period_days=14)
    price("starter_y", 49000, "usd", "year", product=starter, nickname="Starter yearly")
    price("pro_m", 19900, "usd", "month", product=pro, nickname="Pro monthly",
          trial_period_days=14)
    price("pro_legacy", 14900, "usd", "month", product=pro, nickname="Pro monthly (2023)",
          active=False)
    price("business_y", 480000, "usd", "year", product=business, nickname="Business yearly")
    price("team_m", None, "usd", "month", product=team, nickname="Team monthly",
          tiers=[(5, 3000), (20, 2500), (None, 2000)], tiers_mode="graduated")
    price("enterprise_m", None, "usd", "month", product=enterprise, nickname="Enterprise monthly",
          tiers=[(50, 4000, 20000), (200, 3500, 20000), (None, 3000, 20000)],
          tiers_mode="volume")
    price("weekly", 1500, "usd", "week", product=creator, nickname="Creator weekly")
    price("quarterly", 45000, "usd", "month", interval_count=3, product=growth,
          nickname="Growth quarterly")
    price("day_pass", 900, "usd", "day", product=day_pass, nickname="Day pass")
    price("api_metered", 50, "usd", "month", product=api, nickname="API calls per 1,000",
          usage_type="metered", transform_quantity={"divide_by": 1000, "round": "up"})
    price("sms_metered", None, "usd", "month", product=sms, nickname="SMS per message",
          usage_type="metered", unit_amount_decimal="0.75")
    price("viewer_pack", 1000, "usd", "month", product=viewers, nickname="Viewer seats per 5",
          transform_quantity={"divide_by": 5, "round": "up"})
    price("starter_m_eur", 4500, "eur", "month", product=starter, nickname="Starter monthly EUR")
    price("pro_m_eur", 17900, "eur", "month", product=pro, nickname="Pro monthly EUR")
    price("business_y_eur", 440000, "eur", "year", product=business, nickname="Business yearly EUR")
    price("starter_m_gbp", 3900, "gbp", "month", product=starter, nickname="Starter monthly GBP")
    price("pro_m_gbp", 15900, "gbp", "month", product=pro, nickname="Pro monthly GBP")
    price("starter_m_jpy", 7000, "jpy", "month", product=starter, nickname="Starter monthly JPY")
    price("pro_m_jpy", 29800, "jpy", "month", product=pro, nickname="Pro monthly JPY")
    price("business_y_jpy", 720000, "jpy", "year", product=business, nickname="Business yearly JPY")
    price("onboarding", 150000, "usd", None, product=onboarding, nickname="Onboarding")
    return p


def _coupons(store: StripeStore, now: int) -> dict[str, dict]:
    t = now - 1200 * DAY
    return {
        "LAUNCH20": store.add_coupon(percent_off=20, id="LAUNCH20", name="Launch partner 20%",
                                     created=t),
        "PARTNER": store.add_coupon(percent_off=12.5, id="PARTNER", name="Agency partner",
                                    created=t),
        "WELCOME50": store.add_coupon(amount_off=5000, currency="usd", duration="repeating",
                                      duration_in_months=3, id="WELCOME50",
                                      name="$50 off for 3 months", created=t),
        "WELCOME40EUR": store.add_coupon(amount_off=4000, currency="eur", duration="repeating",
                                         duration_in_months=3, id="WELCOME40EUR",
                                         name="€40 off for 3 months", created=t),
        "SEASONAL30": store.add_coupon(percent_off=30, duration="repeating", duration_in_months=3,
                                       id="SEASONAL30", name="Seasonal 30% for 3 months",
                                       created=t),
        "FIRSTMONTH50": store.add_coupon(percent_off=50, duration="once", id="FIRSTMONTH50",
                                         name="50% off the first invoice", created=t),
        "ANNUAL100": store.add_coupon(amount_off=10000, currency="usd", duration="once",
                                      id="ANNUAL100", name="$100 off an annual plan", created=t),
        "RETAIN25": store.add_coupon(percent_off=25, duration="repeating", duration_in_months=1,
                                     id="RETAIN25", name="Retention offer: 25% for a month",
                                     created=t),
    }


# --------------------------------------------------------------------------- customers


def _by_now(at: int, earliest: int, now: int) -> int:
    """`at` if it is a minute past or more, else a moment from `earliest` to then that
    `at` picks (folded back into that span: clamped to a minute ago, everything
    still to come would pile up in one second, at ten to a hundred times the rate
    of any other five minutes, and be listed again by every poll's overlap)."""
    latest = now - 60
    if at <= latest:
        return at
    if earliest >= latest:
        return latest
    return earliest + (at - earliest) % (latest - earliest)


def _pick(rng: random.Random, weights: dict) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _customer_plan(rng: random.Random, index: int, now: int, catalog: dict, coupons: dict) -> dict:
    """What one customer looks like: name, currency, creation time, subscriptions."""
    # Skewed towards recent sign-ups: a growing company.
    age = int(1150 * DAY * rng.random() ** 1.6) + rng.randint(0, DAY)
    created = now - age
    currency = _pick(rng, _CURRENCY_WEIGHTS)
    name = f"{rng.choice(_NAME_A)} {rng.choice(_NAME_B)} {rng.choice(_NAME_C)}".strip()
    email = f"billing+{index}@{name.split()[0].lower()}{name.split()[1].lower()}.example"
    plan = {"created": created, "currency": currency, "name": name, "email": email,
            "segment": "smb", "subscriptions": []}

    roll = rng.random()
    count = 0 if roll < 0.02 else 1 if roll < 0.82 else 2 if roll < 0.96 else 3
    start = created + rng.randint(60, 3 * DAY)
    for _ in range(count):
        if start >= now:
            break
        spec = _subscription_spec(rng, start, now, currency, catalog, coupons)
        plan["subscriptions"].append(spec)
        if spec["items"][0][1] >= 20 or spec["items"][0][0]["lookup_key"].startswith("business"):
            plan["segment"] = "enterprise" if spec["items"][0][1] >= 50 else "mid"
        # A later subscription: after the previous one ended, or alongside it.
        end = spec.get("ended_at") or spec.get("canceled_at")
        start = (end if end and end < now else start) + rng.randint(DAY, 120 * DAY)
    return plan


def _subscription_spec(rng: random.Random, earliest: int, now: int, currency: str,
                       catalog: dict, coupons: dict) -> dict:
    """What a subscription should look like today: add_subscription kwargs plus `key`
    (the plan) and the final `status`, `ended_at`, `canceled_at`... that `_live` reaches."""
    key = _pick(rng, _PLAN_WEIGHTS[currency])
    price = catalog[key]
    rec = price["recurring"]
    status = "canceled" if key == "free" and rng.random() < 0.15 else (
        "active" if key == "free" else _pick(rng, _STATUS_WEIGHTS))
    if key in _INVOICED and status in ("incomplete", "incomplete_expired"):
        status = "active"  # an invoiced plan starts at once; its invoice waits for a transfer
    created = earliest
    spec: dict[str, Any] = {"status": status, "key": key}

    # Recent statuses need recent subscriptions.
    if status == "trialing":
        created = now - rng.randint(_MIN_AGE, 13 * DAY)
        spec["trial_end"] = created + 14 * DAY
    elif status == "incomplete":
        created = now - rng.randint(_MIN_AGE, 22 * _HOUR)
    elif status == "paused":
        created = now - rng.randint(15 * DAY, 90 * DAY)
        spec["trial_end"] = created + 14 * DAY
    elif status == "incomplete_expired":
        created = min(created, now - rng.randint(2 * DAY, 200 * DAY))
    elif status in ("past_due", "unpaid"):
        created = _dunning_start(rng, status, earliest, now, rec)
        if created is None:  # the customer is too new to have missed a renewal
            status = spec["status"] = "active"
            created = earliest
    created = min(created, now - _MIN_AGE)
    spec["created"] = created

    if status == "active" and key != "free" and now - created > 20 * DAY and rng.random() < 0.3:
        spec["trial_end"] = created + 14 * DAY  # a converted trial
    if status == "canceled":
        period = add_interval(created, rec["interval"], rec["interval_count"]) - created
        if rng.random() < 0.25 and key != "free":  # a trial that never converted
            spec["trial_end"] = created + 14 * DAY
            ended = spec["trial_end"]
        else:
            ended = rng.randint(min(created + period, now - 600), now - 60)
            if created + period > now - 600 and created < now - 3 * HOUR:
                # younger than a period: any time in its life, not all in its last minutes
                ended = created + HOUR + (ended - (now - 600)) * (now - 60 - created - HOUR) // 540
        spec["ended_at"] = _by_now(ended, created + HOUR, now)
        spec["canceled_at"] = spec["ended_at"] - (rng.randint(0, 20 * DAY) if rng.random() < 0.5 else 0)
        spec["canceled_at"] = max(spec["canceled_at"], created)
        spec["cancellation_reason"] = "payment_failed" if rng.random() < 0.2 else "cancellation_requested"
    if status == "unpaid" and rng.random() < 0.5:
        spec["collection_method"] = "send_invoice"
    if key in _INVOICED:
        spec["collection_method"] = "send_invoice"
    if status == "active" and rng.random() < 0.06:
        spec["cancel_at_period_end"] = True
        spec["canceled_at"] = max(created, now - rng.randint(60, 20 * DAY))

    quantity = 1
    if key.startswith("pro_m"):
        quantity = 1 + int(19 * rng.random() ** 2.2)
    elif key == "team_m":
        quantity = 1 + int(39 * rng.random() ** 1.8)
    elif key == "enterprise_m":
        quantity = rng.randint(20, 300)
    item_coupons = []
    if key.startswith("pro_m") and rng.random() < 0.04:
        item_coupons.append(coupons["LAUNCH20"])
    items: list[tuple] = [(price, quantity, item_coupons)]
    if key in ("pro_m", "team_m", "enterprise_m") and rng.random() < 0.3:
        items.append((catalog["api_metered"], 1, []))
    if key == "pro_m" and rng.random() < 0.1:
        items.append((catalog["sms_metered"], 1, []))
    if key == "pro_m" and rng.random() < 0.15:
        items.append((catalog["viewer_pack"], rng.randint(1, 25), []))
    spec["items"] = items
    spec["coupons"] = _pick_coupons(rng, key, price, created, now, coupons)
    return spec


def _dunning_start(rng: random.Random, status: str, earliest: int, now: int,
                   rec: dict) -> int | None:
    """A creation time whose latest renewal failed recently: within a week for
    past_due (retries still running), 8-25 days ago for unpaid (retries exhausted)."""
    failed_at = now - (rng.randint(_HOUR, 7 * DAY) if status == "past_due"
                       else rng.randint(8 * DAY, 25 * DAY))
    step = rec["interval_count"]
    possible = [n for n in range(1, 25)
                if add_interval(failed_at, rec["interval"], -n * step) >= earliest]
    if not possible:
        return None
    return add_interval(failed_at, rec["interval"], -rng.choice(possible) * step)


def _pick_coupons(rng: random.Random, key: str, price: dict, created: int, now: int,
                  coupons: dict) -> list:
    if key == "free":
        return []
    age = now - created
    roll = rng.random()
    currency, interval = price["currency"], price["recurring"]["interval"]
    # Repeating coupons only on subscriptions from the last ~4 months: those
    # from 3-4 months ago carry discounts whose `end` has just passed.
    if age < 125 * DAY and interval == "month" and roll < 0.18:
        if currency == "usd":
            return [coupons["WELCOME50"]]
        if currency == "eur":
            return [coupons["WELCOME40EUR"]]
    if age < 200 * DAY and 0.18 <= roll < 0.22:
        return [coupons["SEASONAL30"]]
    if age < 60 * DAY and 0.22 <= roll < 0.27:
        return [coupons["FIRSTMONTH50"]]
    if interval == "year" and currency == "usd" and 0.27 <= roll < 0.37:
        return [coupons["ANNUAL100"]]
    if age > 365 * DAY and 0.37 <= roll < 0.47:
        return [coupons["LAUNCH20"]]
    if 0.47 <= roll < 0.50:
        return [coupons["PARTNER"]]
    return []


# --------------------------------------------------------------------------- histories


def _poisson(rng: random.Random, mean: float) -> int:
    limit, n, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def _live(rng: random.Random, store: StripeStore, customer: str, spec: dict, catalog: dict,
          now: int) -> str:
    """Create one subscription and write its history up to the status the spec asks for."""
    spec = dict(spec)
    key, status = spec.pop("key"), spec.pop("status")
    ended, canceled_at = spec.pop("ended_at", None), spec.pop("canceled_at", None)
    reason = spec.pop("cancellation_reason", None) or "cancellation_requested"
    flagged = spec.pop("cancel_at_period_end", False)
    trial_end, created = spec.get("trial_end"), spec["created"]
    first = ("incomplete" if status in ("incomplete", "incomplete_expired")
             else "trialing" if trial_end else "active")
    sub_id = store.add_subscription(customer, status=first, **spec)["id"]
    tl = store.timeline(sub_id)
    if status == "incomplete":
        return sub_id
    if status == "incomplete_expired":
        store.expire_incomplete(sub_id, created + 23 * HOUR)
        return sub_id
    if trial_end is not None:
        if status == "trialing":
            return sub_id
        if status == "paused":
            store.end_trial(sub_id, trial_end, converted=False, lapse_to="paused")
            return sub_id
        if status == "canceled" and ended <= trial_end:
            if ended == trial_end:
                store.end_trial(sub_id, trial_end, converted=False)
            else:
                store.cancel_subscription(sub_id, ended)
            return sub_id
        store.end_trial(sub_id, trial_end, converted=True)

    # When the random life of the subscription stops, and what ends it.
    final: tuple = ("none",)
    stop = now - HOUR
    if status in ("past_due", "unpaid"):
        failed = _latest_attempt(store, tl, now)
        final, stop = (status, failed), failed
    elif status == "canceled":
        if reason == "payment_failed":
            failed = _latest_attempt(store, tl, ended - 7 * DAY)
            final, stop = ("payment_failed", failed,
                           _by_now(failed + 7 * DAY + HOUR, failed + HOUR, now)), failed
        else:
            end = _scheduled_end(store, tl, ended, now)
            if end is not None and canceled_at < ended:
                final, stop = ("scheduled", end), end - DAY
            else:
                final, stop = ("canceled", ended), ended
    elif status == "active" and flagged:
        final, stop = ("flag", canceled_at), canceled_at
    stop = min(stop, now - HOUR)

    # Seat and plan changes while it is paid for.
    start = tl.starts[-1]
    months = max(0.0, (stop - start) / (30 * DAY))
    times = sorted(rng.randint(start + DAY, stop - HOUR)
                   for _ in range(_poisson(rng, months * _CHANGES_PER_MONTH))
                   if stop - HOUR > start + DAY)
    for at in times:
        key = _random_change(rng, store, sub_id, key, at, catalog, switch=final == ("none",))

    # Payment failures recovered on a retry, in the last weeks.
    after = max(tl.starts[-1], now - 45 * DAY)
    for rec in invoices.records(store, tl):
        if not after < rec.attempt < stop - 6 * DAY or rng.random() >= _RANDOM_FAILURE_RATE:
            continue
        if rec.attempt < tl.starts[-1]:
            continue
        store.fail_payment(sub_id, rec.attempt)
        store.recover_payment(sub_id, rec.attempt + (3 * DAY if rng.random() < 0.8 else 5 * DAY))

    kind = final[0]
    if kind in ("past_due", "unpaid"):
        at = max(final[1], tl.starts[-1])
        store.fail_payment(sub_id, at)
        if kind == "unpaid":
            store.mark_unpaid(sub_id, max(tl.starts[-1], _by_now(at + 7 * DAY + HOUR, at + HOUR, now)))
    elif kind == "payment_failed":
        at = max(final[1], tl.starts[-1])
        store.fail_payment(sub_id, at)
        end = max(final[2], tl.starts[-1])
        if end >= now - DAY and not _may_churn_now(store, customer, end):
            end = max(tl.starts[-1], now - DAY - rng.randint(2 * HOUR, 3 * DAY))
        store.cancel_subscription(sub_id, end, reason="payment_failed", request=False)
    elif kind == "scheduled":
        period_end = final[1]
        at = max(tl.starts[-1] + 1, period_end - rng.randint(HOUR, 20 * DAY))
        at = min(at, period_end - 1)
        if period_end >= now - DAY and not _may_churn_now(store, customer, period_end):
            store.cancel_subscription(sub_id, max(at, now - DAY - rng.randint(2 * HOUR, 3 * DAY)),
                                      reason=reason)
        else:
            store.cancel_subscription(sub_id, at, at_period_end=True, reason=reason)
    elif kind == "canceled":
        at = final[1]
        if at <= tl.starts[-1]:  # not in the same second it started
            at = max(tl.starts[-1], _by_now(tl.starts[-1] + rng.randint(HOUR, 2 * DAY),
                                            tl.starts[-1] + 1, now))
        if at >= now - DAY and not _may_churn_now(store, customer, at):
            at = max(tl.starts[-1], now - DAY - rng.randint(2 * HOUR, 3 * DAY))
        store.cancel_subscription(sub_id, at, reason=reason)
    elif kind == "flag":
        period = _current_period(store, tl, now)
        at = max(tl.starts[-1], period[0], _by_now(final[1], period[0], now))
        store.change_subscription(sub_id, at, cancel_at_period_end=True)
    return sub_id


def _may_churn_now(store: StripeStore, customer: str, at: int) -> bool:
    """Keep the last 24 hours calm: nobody worth more than LARGE_ARR churns then."""
    return customer_arr_usd(store, customer, at) <= LARGE_ARR


def _latest_attempt(store: StripeStore, tl: history.Timeline, until: int) -> int:
    """The latest payment attempt at or before `until` (the creation if none)."""
    latest = tl.starts[-1]
    for rec in invoices.records(store, tl):
        if rec.attempt > until:
            break
        latest = max(latest, rec.attempt)
    return latest


def _current_period(store: StripeStore, tl: history.Timeline, at: int) -> tuple[int, int]:
    st = history.effective_state(store, tl, at)
    return history.item_period(tl, st, store.get("prices", st.items[0].price), at)


def _scheduled_end(store: StripeStore, tl: history.Timeline, ended: int, now: int) -> int | None:
    """The period end a cancellation requested around `ended` would take effect at,
    if that is in the past and within a month of it."""
    end = _current_period(store, tl, max(ended - 1, tl.starts[-1]))[1]
    return end if end <= now - 60 and end - ended <= 31 * DAY else None


def _random_change(rng: random.Random, store: StripeStore, sub_id: str, key: str, at: int,
                   catalog: dict, switch: bool) -> str:
    """One seat, plan or add-on change at `at`; returns the plan key after it."""
    st = store.state_at(sub_id, at)
    items = [(store.get("prices", i.price), i.quantity or 1) for i in st.items]
    options = {}
    if key in _SEAT_LIMITS:
        options.update(seats_up=3, seats_down=2)
    if key in _UPGRADES:
        options["upgrade"] = 2
    if key in _DOWNGRADES:
        options["downgrade"] = 1
    if key == "pro_m":
        options["viewers"] = 1
    if key == "starter_m" and switch:
        options["yearly"] = 0.5
    if not options:
        return key
    choice = _pick(rng, options)
    quantity = items[0][1]
    if choice in ("seats_up", "seats_down"):
        low, high = _SEAT_LIMITS[key]
        step = rng.randint(1, 5) if choice == "seats_up" else -rng.randint(1, 3)
        new = max(low, min(high, quantity + step))
        if new == quantity:
            return key
        items[0] = (items[0][0], new)
    elif choice in ("upgrade", "downgrade"):
        key = (_UPGRADES if choice == "upgrade" else _DOWNGRADES)[key]
        seats = quantity if key.startswith("pro") and quantity > 1 else rng.randint(1, 3)
        items[0] = (catalog[key], seats if key.startswith("pro") else 1)
    elif choice == "viewers":
        pack = catalog["viewer_pack"]["id"]
        if any(p["id"] == pack for p, _ in items):
            items = [(p, q) for p, q in items if p["id"] != pack]
        else:
            items.append((catalog["viewer_pack"], rng.randint(1, 25)))
    else:  # monthly -> yearly billing
        key = "starter_y"
        items[0] = (catalog[key], 1)
    store.change_subscription(sub_id, at, items=items)
    return key


# --------------------------------------------------------------------------- the last 30 days


def _showcase(rng: random.Random, store: StripeStore, catalog: dict, coupons: dict,
              now: int) -> None:
    """Make sure the last 30 days show every movement, whatever the seed and size."""
    window = lambda: now - rng.randint(2 * DAY, 25 * DAY)  # noqa: E731
    single = {c: subs[0] for c, subs in store.subscription_owners().items() if len(subs) == 1}
    quiet = []  # active for a while, alone on their customer, unchanged for 8 weeks
    for customer, sub_id in single.items():
        tl = store.timelines[sub_id]
        st = tl.last
        if (st.status == "active" and st.cancel_at is None and tl.starts[-1] < now - 56 * DAY
                and st.items[0].quantity is not None):
            quiet.append(sub_id)
    rng.shuffle(quiet)
    used: set[str] = set()

    def take(test) -> list[str]:
        return [s for s in quiet if s not in used and test(store.timelines[s])]

    def key_of(tl: history.Timeline) -> str:
        return store.get("prices", tl.last.items[0].price)["lookup_key"] or ""

    # Expansion and contraction: seats.
    for sub_id in take(lambda tl: key_of(tl).startswith("pro_m") and tl.last.items[0].quantity <= 17)[:2]:
        used.add(sub_id)
        st = store.timelines[sub_id].last
        items = [(i.price, (i.quantity or 1) + (3 if k == 0 else 0)) for k, i in enumerate(st.items)]
        store.change_subscription(sub_id, window(), items=items)
    for sub_id in take(lambda tl: tl.last.items[0].quantity >= 3 and key_of(tl) in _SEAT_LIMITS
                       and tl.last.items[0].quantity - 2 >= _SEAT_LIMITS[key_of(tl)][0])[:2]:
        used.add(sub_id)
        st = store.timelines[sub_id].last
        items = [(i.price, (i.quantity or 1) - (2 if k == 0 else 0)) for k, i in enumerate(st.items)]
        store.change_subscription(sub_id, window(), items=items)
    # A one-month retention discount given 5-7 weeks ago ends within the window.
    for sub_id in take(lambda tl: key_of(tl).endswith(("_m", "_m_eur", "_m_gbp", "_m_jpy"))
                       and key_of(tl) != "free")[:2]:
        used.add(sub_id)
        at = now - rng.randint(36 * DAY, 50 * DAY)
        # the discounts it had then (a later one must not move back in time)
        store.change_subscription(sub_id, at, coupons=[*store.state_at(sub_id, at).discounts,
                                                       coupons["RETAIN25"]])
    # Churn: customers below the large-churn threshold.
    for sub_id in take(lambda tl: customer_arr_usd(store, tl.customer) < LARGE_ARR / 2)[:2]:
        used.add(sub_id)
        store.cancel_subscription(sub_id, window())
    # Payment failures in the last day, on renewals due then.
    for sub_id in take(lambda tl: now - 20 * HOUR < _latest_attempt(store, tl, now - HOUR))[:2]:
        used.add(sub_id)
        tl = store.timelines[sub_id]
        store.fail_payment(sub_id, _latest_attempt(store, tl, now - HOUR))
    # Churned customers come back: on their old plan, or through a trial.
    churned = []  # paid once, and left more than 40 days ago
    for customer, subs in store.subscription_owners().items():
        states = [store.timelines[s].last for s in subs]
        if all(s.status == "canceled" and s.ended_at is not None and s.ended_at < now - 40 * DAY
               for s in states) and any(_paid(store, store.timelines[s]) for s in subs):
            churned.append(customer)
    rng.shuffle(churned)
    for n, customer in enumerate(churned[:4]):
        last = store.timelines[store.subscriptions_of(customer)[-1]].last
        price = store.get("prices", last.items[0].price)
        if not price["active"] or price["unit_amount"] == 0:
            price = catalog[{"usd": "starter_m", "eur": "starter_m_eur", "gbp": "starter_m_gbp",
                             "jpy": "starter_m_jpy"}[price["currency"]]]
        if n < 2:
            store.add_subscription(customer, [(price, last.items[0].quantity or 1)], created=window())
        else:  # a trial that converts, and one that lapses, inside the window
            start = now - rng.randint(20 * DAY, 28 * DAY)
            sub_id = store.add_subscription(customer, [price], status="trialing", created=start,
                                            trial_end=start + 14 * DAY)["id"]
            store.end_trial(sub_id, start + 14 * DAY, converted=n == 2)


def _paid(store: StripeStore, tl: history.Timeline) -> bool:
    """Whether the subscription was ever active on a plan that costs something."""
    for seg in tl.segments:
        if seg.state.status == "active":
            for item in seg.state.items:
                price = store.get("prices", item.price)
                if item.quantity and invoices.licensed_amount(
                        price, store.price_tiers.get(price["id"]), item.quantity) > 0:
                    return True
    return False


def _refunds_and_disputes(rng: random.Random, store: StripeStore, now: int) -> None:
    succeeded = [c for c in store.objects("charges")
                 if c["status"] == "succeeded" and c["created"] < now - HOUR]
    if not succeeded:
        return
    picks = rng.sample(succeeded, min(len(succeeded), max(3, round(len(succeeded) * 0.012))))
    for ch in picks:
        amount = ch["amount"] if rng.random() < 0.8 else max(1, ch["amount"] // 2)
        created = max(ch["created"] + 60, _by_now(ch["created"] + rng.randint(HOUR, 6 * DAY),
                                                  ch["created"] + 60, now))
        status = _pick(rng, {"succeeded": 90, "pending": 7, "failed": 3})
        if status == "pending" and created < now - REFUND_SETTLES:
            status = "succeeded"  # it has settled by now
        reason = _pick(rng, {"requested_by_customer": 70, "duplicate": 15, "fraudulent": 5, None: 10})
        store.add_refund(ch["id"], amount, created=created, status=status, reason=reason)
    refunded = {ch["id"] for ch in picks}
    candidates = [c for c in succeeded if c["id"] not in refunded]
    statuses = [*OPEN_DISPUTE_STATUSES, "needs_response", *CLOSED_DISPUTE_STATUSES[:2]]
    for status, ch in zip(statuses, rng.sample(candidates, min(len(candidates), len(statuses)))):
        created = max(ch["created"] + 60, _by_now(ch["created"] + rng.randint(DAY, 12 * DAY),
                                                  ch["created"] + 60, now))
        reason = _pick(rng, {"fraudulent": 35, "product_not_received": 15, "subscription_canceled": 20,
                             "general": 15, "unrecognized": 10, "duplicate": 5})
        store.add_dispute(ch["id"], status=status, reason=reason, created=created)


# --------------------------------------------------------------------------- charges



def _one_off_charges(rng: random.Random, store: StripeStore, now: int) -> list[dict]:
    """Onboarding packages and professional services, a few a month."""
    charges = []
    for cus in store.objects("customers"):
        if cus["created"] < now - _WINDOW or rng.random() > 0.05:
            continue
        at = _by_now(cus["created"] + rng.randint(DAY, 10 * DAY), cus["created"] + 60, now)
        currency = cus["currency"] or "usd"
        amount = {"usd": 150000, "eur": 140000, "gbp": 120000, "jpy": 220000}[currency]
        kwargs = dict(customer=cus["id"], amount=amount, currency=currency, created=at,
                      description="Onboarding package")
        if rng.random() < 0.08:
            code, decline = pick_failure(rng)
            kwargs.update(status="failed", failure_code=code, decline_code=decline)
        charges.append(kwargs)
    return charges
