"""Keep a simulated company moving: `CompanyTicker` applies what happened since the last tick.

    ticker = CompanyTicker(store, rng_seed=1)      # clock=time.time by default
    ticker.tick()                                   # or ticker.start(60) on a daemon thread

Each tick moves `store.now` to the clock and, between the previous `now` and
the new one, in time order: trials end (most convert, some lapse into
canceled or paused), incomplete signups expire or complete, renewals are
paid or fail (the subscription goes past_due), past-due subscriptions are
retried (recovered, or unpaid / canceled once the retries run out), and
random business happens at the rates in `DEFAULT_RATES` (per 1,000 customers
a day, scaled to the company): signups (some on trial, a few failing their
first payment), upgrades, downgrades, cancellations (now or at period end),
reactivations of churned customers; pending refunds settle (a few fail at
the bank) and open disputes are answered, then won or lost (at
`REFUND_SETTLES_PER_HOUR` and `DISPUTE_MOVES_PER_HOUR`). The defaults match what the generated
company did in its last 30 days, so a demo can run for weeks without its
30-day KPIs drifting across a documented threshold; `rates=` sets others
(tests use busier ones); `renewal_failure`, `retry_success` and
`retry_per_hour` simulate a card processor outage (see scenarios.py).
Discounts ending and scheduled cancellations need nothing: the timelines
derive them. Every change goes through the store's subscription API, so
events, invoices and subscriptions stay consistent; charges are added for
the payments made. The store lock is held for the whole tick.

Deterministic for a seed, a store and a sequence of clock readings. By
default customers worth more than 10,000 a year (`LARGE_ARR`) are never
churned at random (a calm demo); `churn_large_customer()` churns the largest
on demand, `allow_large_churn=True` lets chance do it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

from exporter.simulator import history, invoices
from exporter.simulator.history import TERMINAL
from exporter.simulator.payments import OPEN_DISPUTE_STATUSES, paid_by_transfer, pick_failure
from exporter.simulator.periods import DAY, HOUR

if TYPE_CHECKING:  # pragma: no cover
    from exporter.simulator.stripe_store import StripeStore

log = logging.getLogger(__name__)

# Events per 1,000 customers a day: about the generated company's own pace
# (growing ~5 % a month, ~2 % of paying customers cancelling), so its 30-day
# KPIs hold steady while the demo runs.
DEFAULT_RATES = {
    "signup": 2.5,
    "upgrade": 1.2,
    "downgrade": 0.6,
    "cancel": 0.5,
    "reactivation": 0.1,
}
# A company in fast-forward, for tests that want every kind of change within hours.
BUSY_RATES = {kind: per_day * 250 for kind, per_day in DEFAULT_RATES.items()}
RETRY_PER_HOUR = 0.2  # per past-due subscription: smart retries between the scheduled ones
RENEWAL_FAILURE = 0.03  # share of renewal payments that fail at first
RETRY_SUCCESS = 0.3
TRIAL_CONVERSION = 0.65
TRIAL_SHARE, INCOMPLETE_SHARE = 0.35, 0.08
REFUND_SETTLES_PER_HOUR = 1 / 48  # a pending refund settles in two days on average
REFUND_FAILURE = 0.05
DISPUTE_MOVES_PER_HOUR = 1 / (7 * 24)  # answered in about a week, decided a week or so later
DISPUTE_WIN = 0.4
_DISPUTE_NEXT = {"warning_needs_response": "warning_under_review",
                 "warning_under_review": "warning_closed", "needs_response": "under_review"}
LARGE_ARR = 10_000  # in USD, what the documented "large churn" alert is about
# Rough USD values for judging what a customer is worth (not for the KPIs).
USD_RATES = {"usd": Decimal(1), "eur": Decimal("1.10"), "gbp": Decimal("1.27"),
             "jpy": Decimal("0.0067")}
ZERO_DECIMAL = frozenset({"jpy"})
_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}


def customer_arr_usd(store: "StripeStore", customer: str, at: int | None = None) -> Decimal:
    """About what a customer pays a year, in USD, at `at` (list prices, discounts ignored)."""
    at = store.now if at is None else at
    total = Decimal(0)
    for sub_id in store.subscriptions_of(customer):
        st = store.state_at(sub_id, at)
        if st is None or st.status not in ("active", "past_due"):
            continue
        currency = store.timelines[sub_id].currency
        for item in st.items:
            if item.quantity is None:
                continue
            price = store.get("prices", item.price)
            rec = price["recurring"]
            amount = invoices.licensed_amount(price, store.price_tiers.get(price["id"]), item.quantity)
            per_year = amount * _PER_YEAR[rec["interval"]] / rec["interval_count"]
            major = per_year if currency in ZERO_DECIMAL else per_year / 100
            total += major * USD_RATES.get(currency, Decimal(1))
    return total


class CompanyTicker:
    """Applies realistic changes to a store since the last tick (see the module doc)."""

    def __init__(self, store: "StripeStore", rng_seed: int = 0,
                 clock: Callable[[], float] = time.time, *, rates: dict[str, float] | None = None,
                 allow_large_churn: bool = False, max_changes: int = 500,
                 renewal_failure: float = RENEWAL_FAILURE, retry_success: float = RETRY_SUCCESS,
                 retry_per_hour: float = RETRY_PER_HOUR):
        self.store = store
        self.rng = random.Random(rng_seed)
        # Refunds and disputes draw from their own: they leave the business as it was.
        self.payments_rng = random.Random(rng_seed * 1_000_003 + 17)
        self.clock = clock
        # Per hour for this company: the rates are per 1,000 customers a day.
        scale = max(1, store.count("customers")) / 1000 / 24
        self.rates = {kind: per_day * scale
                      for kind, per_day in {**DEFAULT_RATES, **(rates or {})}.items()}
        self.renewal_failure = renewal_failure
        self.retry_success = retry_success
        self.retry_per_hour = retry_per_hour
        self.allow_large_churn = allow_large_churn
        self.max_changes = max_changes
        self.changes: list[tuple[int, str, str]] = []  # (time, kind, subscription), last 1000
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ running

    def start(self, interval: float = 60.0) -> "CompanyTicker":
        """Tick every `interval` seconds on a daemon thread until `stop()`."""
        if self._thread is not None:
            return self
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # a bug here must not kill the demo
                    log.exception("company ticker failed")

        self._thread = threading.Thread(target=run, name="company-ticker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def tick(self) -> list[tuple[int, str, str]]:
        """Advance the store to the clock; returns the changes made (time, kind, and the
        subscription's id, or the refund's or dispute's)."""
        store = self.store
        with store.lock:
            t0, t1 = store.now, int(self.clock())
            if t1 <= t0:
                return []
            applied: list[tuple[int, str, str]] = []
            with store.batch():
                store.advance(t1)
                for at, _, kind, target in self._plan(t0, t1):
                    done = getattr(self, "_do_" + kind)(at, target)
                    if done:
                        applied.append((at, kind, done))
            self.changes = (self.changes + applied)[-1000:]
            return applied

    # ------------------------------------------------------------------ planning

    def _plan(self, t0: int, t1: int) -> list[tuple[int, int, str, Any]]:
        """Everything due in (t0, t1], sorted by time."""
        store = self.store
        plan: list[tuple[int, int, str, Any]] = []
        for tl in store.timelines.values():
            last = tl.segments[-1]
            st = last.state
            if st.status in TERMINAL or (st.cancel_at is not None and st.cancel_at <= t0):
                continue
            if st.status == "trialing" and st.trial_end is not None and t0 < st.trial_end <= t1:
                plan.append((st.trial_end, 0, "trial_end", tl.id))
            if st.status == "incomplete" and t0 < tl.created + 23 * HOUR <= t1:
                plan.append((tl.created + 23 * HOUR, 0, "incomplete_end", tl.id))
            for rec in reversed(invoices.records(store, tl)):
                if rec.attempt <= t0:
                    break
                if rec.attempt <= t1:
                    plan.append((rec.attempt, 1, "attempt", (tl.id, rec.id)))
            if st.status in ("past_due", "unpaid"):
                failed_at = self._failing_since(tl)
                for offset in invoices.RETRY_OFFSETS[1:]:
                    if t0 < failed_at + offset <= t1:
                        plan.append((failed_at + offset, 2, "retry", tl.id))
                if st.status == "past_due" and t0 < failed_at + 7 * DAY + HOUR <= t1:
                    plan.append((failed_at + 7 * DAY + HOUR, 3, "give_up", tl.id))
                for at in self._poisson_times(self.retry_per_hour, t0, t1):
                    plan.append((at, 2, "retry", tl.id))
        for kind in ("signup", "upgrade", "downgrade", "cancel", "reactivation"):
            for at in self._poisson_times(self.rates[kind], t0, t1):
                plan.append((at, 4, kind, None))
        unsettled = [("refund_settles", REFUND_SETTLES_PER_HOUR, r["id"])
                     for r in store.objects("refunds") if r["status"] == "pending"]
        unsettled += [("dispute_moves", DISPUTE_MOVES_PER_HOUR, d["id"])
                      for d in store.objects("disputes") if d["status"] in OPEN_DISPUTE_STATUSES]
        for kind, per_hour, object_id in unsettled:
            moments = self._poisson_times(per_hour, t0, t1, self.payments_rng)
            if moments:
                plan.append((moments[0], 5, kind, object_id))
        plan.sort(key=lambda p: (p[0], p[1]))
        return plan[:self.max_changes]

    def _poisson_times(self, per_hour: float, t0: int, t1: int,
                       rng: random.Random | None = None) -> list[int]:
        """Random moments in (t0, t1] at `per_hour` on average (capped)."""
        rng = rng or self.rng
        mean = per_hour * (t1 - t0) / HOUR
        if mean <= 0:
            return []
        # Knuth for small means, a normal approximation for large ones.
        if mean < 30:
            limit, n, p = math.exp(-mean), 0, rng.random()
            while p > limit:
                n += 1
                p *= rng.random()
        else:
            n = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        n = min(n, self.max_changes)
        return sorted(rng.randint(t0 + 1, t1) for _ in range(n))

    def _failing_since(self, tl: history.Timeline) -> int:
        """When the current run of failed payments began."""
        k = len(tl.segments) - 1
        while k > 0 and tl.segments[k - 1].state.status in ("past_due", "unpaid"):
            k -= 1
        return tl.starts[k]

    # ------------------------------------------------------------------ scheduled changes

    def _do_trial_end(self, at: int, sub_id: str) -> str | None:
        store = self.store
        if store.timelines[sub_id].last.status != "trialing":
            return None
        converted = self.rng.random() < TRIAL_CONVERSION
        lapse = "paused" if self.rng.random() < 0.25 else "canceled"
        store.end_trial(sub_id, at, converted=converted, lapse_to=lapse)
        if converted:  # the first payment, an hour later, may already be due
            tl = store.timelines[sub_id]
            rec = next((r for r in invoices.records(store, tl) if r.t == at), None)
            if rec is not None and rec.attempt <= store.now:
                self._do_attempt(rec.attempt, (sub_id, rec.id))
        return sub_id

    def _do_incomplete_end(self, at: int, sub_id: str) -> str | None:
        store = self.store
        if store.timelines[sub_id].last.status != "incomplete":
            return None
        if self.rng.random() < 0.3:  # the customer completed the payment in the end
            paid_at = self.rng.randint(store.timelines[sub_id].starts[-1], at)
            store.recover_payment(sub_id, paid_at)
            self._charge(sub_id, invoices.records(store, store.timelines[sub_id])[0].id, paid_at, True)
        else:
            store.expire_incomplete(sub_id, at)
        return sub_id

    def _do_attempt(self, at: int, target: tuple[str, str]) -> str | None:
        store = self.store
        sub_id, invoice = target
        tl = store.timelines[sub_id]
        if at < tl.starts[-1]:
            return None
        st = history.effective_state(store, tl, at)
        if st.status in TERMINAL or st.status == "unpaid":  # unpaid: left as a draft
            return None
        if st.status in ("past_due", "incomplete"):
            succeeded = self.rng.random() < self.retry_success
            if succeeded:
                store.recover_payment(sub_id, at)
        else:
            succeeded = self.rng.random() >= self.renewal_failure
            if not succeeded:
                store.fail_payment(sub_id, at)
        self._charge(sub_id, invoice, at, succeeded)
        return sub_id

    def _do_retry(self, at: int, sub_id: str) -> str | None:
        store = self.store
        tl = store.timelines[sub_id]
        if at < tl.starts[-1] or tl.last.status not in ("past_due", "unpaid"):
            return None
        open_ = [r for r in invoices.records(store, tl) if r.outcome == "open" and r.attempt <= at]
        if not open_:
            return None
        succeeded = self.rng.random() < self.retry_success
        if succeeded:
            store.recover_payment(sub_id, at)
        self._charge(sub_id, open_[-1].id, at, succeeded)
        return sub_id

    def _do_give_up(self, at: int, sub_id: str) -> str | None:
        """The retries ran out: unpaid, or canceled for non-payment."""
        store = self.store
        tl = store.timelines[sub_id]
        if at < tl.starts[-1] or tl.last.status != "past_due":
            return None
        if self.rng.random() < 0.5 and self._may_churn(tl.customer, at):
            store.cancel_subscription(sub_id, at, reason="payment_failed", request=False)
        else:
            store.mark_unpaid(sub_id, at)
        return sub_id

    # ------------------------------------------------------------------ random business

    def _do_signup(self, at: int, _: Any) -> str | None:
        store, rng = self.store, self.rng
        prices = self._plans()
        if not prices:
            return None
        price = rng.choice(prices)
        cus = store.add_customer(f"{rng.choice(_NAMES_A)} {rng.choice(_NAMES_B)}", created=at,
                                 metadata={"segment": "smb", "source": "ticker"})
        seats = (price.get("lookup_key") or "").startswith(("pro", "team"))
        quantity = rng.randint(1, 8) if seats else 1
        roll = rng.random()
        if roll < TRIAL_SHARE:
            sub = store.add_subscription(cus, [(price, quantity)], status="trialing", created=at,
                                         trial_end=at + 14 * DAY)
        elif roll < TRIAL_SHARE + INCOMPLETE_SHARE:
            sub = store.add_subscription(cus, [(price, quantity)], status="incomplete", created=at)
            self._charge(sub["id"], None, at, False)
        else:
            sub = store.add_subscription(cus, [(price, quantity)], created=at)
            self._charge(sub["id"], None, at, True)
        return sub["id"]

    def _do_upgrade(self, at: int, _: Any) -> str | None:
        return self._resize(at, up=True)

    def _do_downgrade(self, at: int, _: Any) -> str | None:
        return self._resize(at, up=False)

    def _resize(self, at: int, up: bool) -> str | None:
        """More or fewer seats, or a pricier / cheaper plan in the same currency and interval."""
        store, rng = self.store, self.rng
        tl = self._pick_paying(at)
        if tl is None:
            return None
        st = history.effective_state(store, tl, at)
        first = st.items[0]
        price = store.get("prices", first.price)
        items = [(store.get("prices", i.price), i.quantity or 1) for i in st.items]
        others = self._alternatives(price, up)
        seats = (price.get("lookup_key") or "").startswith(("pro", "team", "enterprise")) \
            or price["billing_scheme"] == "tiered"
        if seats and (rng.random() < 0.7 or not others):
            quantity = first.quantity or 1
            quantity = quantity + rng.randint(1, 4) if up else quantity - rng.randint(1, 2)
            if quantity < 1 or quantity > 300:
                return None
            items[0] = (price, quantity)
        elif others:
            items[0] = (rng.choice(others), 1 if up is False else first.quantity or 1)
        else:
            return None
        store.change_subscription(tl.id, at, items=[(p, q) if p["recurring"]["usage_type"] == "licensed"
                                                    else (p, 1) for p, q in items])
        return tl.id

    def _alternatives(self, price: dict, up: bool) -> list[dict]:
        rec = price["recurring"]
        mine = price["unit_amount"]
        if mine is None:
            return []
        out = []
        for p in self._plans():
            r = p["recurring"]
            if (p["currency"] != price["currency"] or p["unit_amount"] is None
                    or (r["interval"], r["interval_count"]) != (rec["interval"], rec["interval_count"])):
                continue
            if (p["unit_amount"] > mine) if up else (0 < p["unit_amount"] < mine):
                out.append(p)
        return out

    def _do_cancel(self, at: int, _: Any) -> str | None:
        store = self.store
        tl = self._pick_paying(at, churnable=True)
        if tl is None:
            return None
        if self.rng.random() < 0.5:
            store.cancel_subscription(tl.id, at, at_period_end=True)
        else:
            store.cancel_subscription(tl.id, at)
        return tl.id

    def _do_reactivation(self, at: int, _: Any) -> str | None:
        """A churned customer comes back on the plan they had."""
        store, rng = self.store, self.rng
        churned = []
        for customer, subs in store.subscription_owners().items():
            states = [history.effective_state(store, store.timelines[s], at) for s in subs]
            if states and all(s.status in TERMINAL for s in states) and any(
                    s.status == "canceled" and s.ended_at < at - 7 * DAY for s in states):
                churned.append((customer, subs[-1]))
        if not churned:
            return None
        customer, last = rng.choice(churned)
        st = store.timelines[last].segments[-1].state
        items = [(i.price, i.quantity or 1) for i in st.items
                 if store.get("prices", i.price)["active"]]
        if not items:
            return None
        sub = store.add_subscription(customer, items, created=at)
        self._charge(sub["id"], None, at, True)
        return sub["id"]

    def _do_refund_settles(self, at: int, refund: str) -> str:
        failed = self.payments_rng.random() < REFUND_FAILURE
        return self.store.update_refund(refund, "failed" if failed else "succeeded", at=at)["id"]

    def _do_dispute_moves(self, at: int, dispute: str) -> str:
        status = self.store.get("disputes", dispute)["status"]
        won = self.payments_rng.random() < DISPUTE_WIN
        moved = _DISPUTE_NEXT.get(status) or ("won" if won else "lost")
        return self.store.update_dispute(dispute, moved, at=at)["id"]

    def churn_large_customer(self, at: int | None = None, min_arr: float = LARGE_ARR) -> str | None:
        """Cancel every subscription of the customer worth the most (if above `min_arr`
        USD a year) at `at` (default now): what the "large churn" alert is about."""
        return churn_large_customer(self.store, at, min_arr)

    # ------------------------------------------------------------------ helpers

    def _plans(self) -> list[dict]:
        return [p for p in self.store.objects("prices")
                if p["active"] and p["recurring"] and p["recurring"]["usage_type"] == "licensed"
                and (p["unit_amount"] or p["billing_scheme"] == "tiered")]

    def _pick_paying(self, at: int, churnable: bool = False) -> history.Timeline | None:
        """A random subscription that is paying, not set to cancel, changeable at `at`."""
        store, rng = self.store, self.rng
        timelines = list(store.timelines.values())
        for _ in range(40):
            tl = rng.choice(timelines)
            if tl.starts[-1] > at:
                continue
            st = history.effective_state(store, tl, at)
            if st.status != "active" or st.cancel_at is not None:
                continue
            if churnable and not self._may_churn(tl.customer, at):
                continue
            return tl
        return None

    def _may_churn(self, customer: str, at: int) -> bool:
        return self.allow_large_churn or customer_arr_usd(self.store, customer, at) <= LARGE_ARR

    def _charge(self, sub_id: str, invoice: str | None, at: int, succeeded: bool) -> None:
        """A charge for an invoice of the subscription (its first one if None)."""
        store = self.store
        tl = store.timelines[sub_id]
        recs = invoices.records(store, tl)
        rec = next((r for r in recs if r.id == invoice), None) if invoice else (recs[0] if recs else None)
        if rec is None:
            return
        amount = invoices.invoice_total(store, tl, rec)
        if amount <= 0 or paid_by_transfer(store, tl, rec.t):
            return
        kwargs: dict[str, Any] = dict(customer=tl.customer, amount=amount, currency=tl.currency,
                                      created=at, description="Subscription creation"
                                      if rec.point.reason == "subscription_create" else
                                      "Subscription update")
        if not succeeded:
            code, decline = pick_failure(self.rng)
            kwargs.update(status="failed", failure_code=code, decline_code=decline)
        store.add_charge(**kwargs)


def churn_large_customer(store: "StripeStore", at: int | None = None,
                         min_arr: float = LARGE_ARR) -> str | None:
    """Cancel all subscriptions of the customer worth the most, if above `min_arr` USD/year.
    Returns the customer id (None if nobody is that large)."""
    with store.lock:
        at = store.now if at is None else int(at)
        best, best_arr = None, Decimal(min_arr)
        for customer in store.subscription_owners():
            arr = customer_arr_usd(store, customer, at)
            if arr > best_arr:
                best, best_arr = customer, arr
        if best is None:
            return None
        for sub_id in store.subscriptions_of(best):
            tl = store.timelines[sub_id]
            if tl.starts[-1] <= at and history.effective_state(store, tl, at).status not in TERMINAL:
                store.cancel_subscription(sub_id, at)
        return best


_NAMES_A = ("Aurora", "Basalt", "Cobalt", "Drift", "Echo", "Flint", "Glacier", "Halo", "Indigo",
            "Jasper", "Keystone", "Lagoon", "Meridian", "Nova", "Onyx", "Prairie")
_NAMES_B = ("Apps", "Bistro", "Clinic", "Designs", "Energy", "Fitness", "Goods", "Hosting",
            "Insights", "Legal", "Motors", "Outdoors", "Print", "Realty", "Software")
