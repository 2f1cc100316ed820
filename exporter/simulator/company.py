"""A seeded, realistic SaaS company in Stripe, for the demo and integration tests.

`generate_company(seed, customers, now)` returns a `StripeStore` with:

- a catalog: Free, Starter ($49/month, $490/year), Pro ($199/seat/month, plus a
  legacy $149 price that is no longer active), Business ($4,800/year), Team
  (graduated tiers per seat), Enterprise (volume tiers with a platform fee),
  Creator Weekly, Growth Quarterly (every 3 months), a Day Pass, two metered
  add-ons (API calls billed per 1,000 with transform_quantity; SMS at a
  sub-cent unit_amount_decimal), a viewer-seat pack (per 5 seats), EUR, GBP and
  JPY prices, and a one-time onboarding price;
- coupons: percent_off forever, amount_off repeating 3 months (USD and EUR;
  customers who signed up 3-4 months ago still carry discounts whose `end`
  has just passed), percent_off repeating, and `once` coupons;
- customers created over ~3 years with growth towards today, some with several
  subscriptions (an old canceled one and a new one, or an extra product);
- subscription statuses in realistic proportions: mostly active (some set to
  cancel at period end, many converted from a trial), then canceled,
  trialing, past_due, incomplete_expired, unpaid, paused and incomplete;
- charges for every renewal in the last 30 days (and their smart retries),
  ~6 % failed with Stripe's failure codes, a few refunds and one-off charges.

Everything comes from `random.Random(seed)`: the same seed and `now` give the
same store, ids included.
"""

from __future__ import annotations

import math
import random
import time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from exporter.simulator.stripe_store import DAY, StripeStore, add_interval, period_containing

_HOUR = 3600
_MIN_AGE = 600  # the newest subscriptions are at least this old (seconds)
_WINDOW = 30 * DAY  # charges are generated for this many seconds before `now`

# Status weights for new subscriptions (free plans are only active or canceled).
_STATUS_WEIGHTS = {
    "active": 74.0,
    "canceled": 13.0,
    "trialing": 6.0,
    "past_due": 1.6,
    "incomplete_expired": 1.5,
    "paused": 1.2,
    "unpaid": 0.5,
    "incomplete": 0.4,
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
# (failure_code, decline_code) weights for failed charges.
_FAILURES = {
    ("card_declined", "generic_decline"): 38,
    ("card_declined", "insufficient_funds"): 30,
    ("expired_card", None): 15,
    ("card_declined", "do_not_honor"): 6,
    ("incorrect_cvc", None): 5,
    ("processing_error", None): 6,
}
_RANDOM_FAILURE_RATE = 0.025  # on top of past_due / unpaid / incomplete retries

_NAME_A = ("Blue", "Bright", "Cedar", "Copper", "Delta", "Ember", "Fable", "Granite", "Harbor",
           "Iris", "Juniper", "Kite", "Lumen", "Maple", "Nimbus", "Orbit", "Pine", "Quartz",
           "River", "Summit", "Tidal", "Umber", "Vector", "Willow", "Zephyr")
_NAME_B = ("Analytics", "Bakery", "Cloud", "Dental", "Foods", "Health", "Labs", "Logistics",
           "Media", "Partners", "Robotics", "Studio", "Systems", "Travel", "Works")
_NAME_C = ("Inc", "LLC", "Ltd", "GmbH", "Co", "SAS", "KK", "")
_COUNTRY = {"usd": "US", "eur": "DE", "gbp": "GB", "jpy": "JP"}


def generate_company(seed: int = 7, customers: int = 3000, now: float | None = None) -> StripeStore:
    """A deterministic (for `seed` and `now`) Stripe account of a SaaS company."""
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
    charge_specs = []
    for customer_id, spec in sub_specs:
        sub = store.add_subscription(customer_id, **spec)
        charge_specs.extend(_subscription_charges(rng, store, sub, now))
    charge_specs.extend(_one_off_charges(rng, store, now))

    charge_specs.sort(key=lambda c: c["created"])
    for kwargs in charge_specs:
        store.add_charge(**kwargs)
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
    }


# --------------------------------------------------------------------------- customers


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
    """kwargs for StripeStore.add_subscription (customer excluded)."""
    key = _pick(rng, _PLAN_WEIGHTS[currency])
    price = catalog[key]
    rec = price["recurring"]
    status = "canceled" if key == "free" and rng.random() < 0.15 else (
        "active" if key == "free" else _pick(rng, _STATUS_WEIGHTS))
    created = earliest
    spec: dict[str, Any] = {"status": status}

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
        spec["ended_at"] = min(ended, now - 60)
        spec["canceled_at"] = spec["ended_at"] - (rng.randint(0, 20 * DAY) if rng.random() < 0.5 else 0)
        spec["canceled_at"] = max(spec["canceled_at"], created)
        spec["cancellation_reason"] = "payment_failed" if rng.random() < 0.2 else "cancellation_requested"
    if status == "unpaid" and rng.random() < 0.5:
        spec["collection_method"] = "send_invoice"
    if key in ("business_y", "enterprise_m", "business_y_eur", "business_y_jpy") and rng.random() < 0.5:
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


# --------------------------------------------------------------------------- charges


def _units(price: dict, quantity: int) -> int:
    tq = price["transform_quantity"]
    if not tq:
        return quantity
    rounder = math.ceil if tq["round"] == "up" else math.floor
    return rounder(quantity / tq["divide_by"])


def _licensed_amount(price: dict, tiers: list | None, quantity: int) -> Decimal:
    units = _units(price, quantity)
    if price["billing_scheme"] == "per_unit":
        return Decimal(price["unit_amount_decimal"]) * units
    if price["tiers_mode"] == "volume":
        tier = next(t for t in tiers if t["up_to"] is None or units <= t["up_to"])
        return Decimal(tier["unit_amount"] or 0) * units + (tier["flat_amount"] or 0)
    total, below = Decimal(0), 0
    for tier in tiers:
        top = units if tier["up_to"] is None else min(units, tier["up_to"])
        if top > below:
            total += Decimal(tier["unit_amount"] or 0) * (top - below) + (tier["flat_amount"] or 0)
        below = top
        if tier["up_to"] is None or units <= tier["up_to"]:
            break
    return total


def _discounted(amount: Decimal, discount_ids: list, store: StripeStore, at: int) -> Decimal:
    for discount_id in discount_ids:
        discount = store.get("discounts", discount_id)
        if discount["end"] is not None and discount["end"] <= at:
            continue
        coupon = store.get("coupons", discount["source"]["coupon"])
        if coupon["duration"] == "once" and at > discount["start"] + DAY:
            continue
        if coupon["percent_off"] is not None:
            amount = amount * (100 - Decimal(str(coupon["percent_off"]))) / 100
        else:
            amount = max(Decimal(0), amount - coupon["amount_off"])
    return amount


def _invoice_amount(rng: random.Random, store: StripeStore, sub: dict, at: int) -> int:
    """What a renewal at `at` charges: licensed items in advance, metered usage in arrears."""
    total = Decimal(0)
    for item in sub["items"]["data"]:
        price = item["price"]
        if price["recurring"]["usage_type"] == "metered":
            usage = rng.randint(0, 2_000_000) if price["transform_quantity"] else rng.randint(0, 5000)
            line = Decimal(price["unit_amount_decimal"]) * _units(price, usage)
        else:
            line = _licensed_amount(price, store.price_tiers.get(price["id"]), item["quantity"])
        total += _discounted(line, item["discounts"], store, at)
    total = _discounted(total, sub["discounts"], store, at)
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _renewals(sub: dict, since: int, until: int) -> list[int]:
    """Billing dates of the subscription's first item within (since, until]."""
    rec = sub["items"]["data"][0]["price"]["recurring"]
    interval, count = rec["interval"], rec["interval_count"]
    anchor = sub["billing_cycle_anchor"]
    dates = set() if sub["trial_end"] else {sub["created"]}  # the first invoice, unless a trial
    t = period_containing(anchor, max(since, anchor), interval, count)[0]
    while t <= until:
        dates.add(t)
        t = period_containing(anchor, t, interval, count)[1]
    return sorted(d for d in dates if since < d <= until)


def _failure(rng: random.Random) -> tuple[str, str | None]:
    return _pick(rng, _FAILURES)


def _subscription_charges(rng: random.Random, store: StripeStore, sub: dict, now: int) -> list[dict]:
    status = sub["status"]
    if status in ("trialing", "paused"):  # paused: the trial ended without a payment method
        return []
    since = now - _WINDOW
    customer, currency = sub["customer"], sub["currency"]
    charges: list[dict] = []

    def charge(at: int, amount: int, failed: bool, description: str) -> None:
        if amount <= 0 or at > now or at <= since:
            return
        kwargs = dict(customer=customer, amount=amount, currency=currency, created=at,
                      description=description)
        if failed:
            code, decline = _failure(rng)
            kwargs.update(status="failed", failure_code=code, decline_code=decline)
        elif rng.random() < 0.01:
            kwargs["amount_refunded"] = amount
        charges.append(kwargs)

    if status in ("incomplete", "incomplete_expired"):
        charge(sub["created"] + 5, _invoice_amount(rng, store, sub, sub["created"]), True,
               "Subscription creation")
        return charges

    until = sub["ended_at"] - 1 if sub["ended_at"] else now
    dates = _renewals(sub, since, until)
    for n, at in enumerate(dates):
        at += rng.randint(30, 3600)  # invoices finalize about an hour after the period starts
        amount = _invoice_amount(rng, store, sub, at)
        description = "Subscription creation" if at - sub["created"] < 2 * _HOUR else "Subscription update"
        latest = n == len(dates) - 1
        if latest and status in ("past_due", "unpaid"):
            # Smart retries: the first attempt and the retries so far all failed.
            for delay in (0, 3 * DAY, 5 * DAY, 7 * DAY):
                if status == "past_due" and delay >= 7 * DAY:
                    break
                charge(at + delay + rng.randint(0, 600), amount, True, description)
        elif rng.random() < _RANDOM_FAILURE_RATE:
            charge(at, amount, True, description)
            charge(at + rng.randint(1, 3) * DAY, amount, False, description)  # recovered on retry
        else:
            charge(at, amount, False, description)
    return charges


def _one_off_charges(rng: random.Random, store: StripeStore, now: int) -> list[dict]:
    """Onboarding packages and professional services, a few a month."""
    charges = []
    for cus in store.objects("customers"):
        if cus["created"] < now - _WINDOW or rng.random() > 0.05:
            continue
        at = min(now - 60, cus["created"] + rng.randint(DAY, 10 * DAY))
        currency = cus["currency"] or "usd"
        amount = {"usd": 150000, "eur": 140000, "gbp": 120000, "jpy": 220000}[currency]
        kwargs = dict(customer=cus["id"], amount=amount, currency=currency, created=at,
                      description="Onboarding package")
        if rng.random() < 0.08:
            code, decline = _failure(rng)
            kwargs.update(status="failed", failure_code=code, decline_code=decline)
        charges.append(kwargs)
    return charges
