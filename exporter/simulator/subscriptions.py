"""The store's subscription API: create subscriptions and write their histories.

Every change appends a segment to the subscription's timeline (see
`history.py`) and re-renders the current object at `store.now`; events and
invoices are derived from the timelines, so they always agree with the
subscription objects. Changes are appended in time order, no later than
`store.now` (move the clock with `advance`).

    store = StripeStore(now=NOW)
    sub = store.add_subscription(cus, [(pro, 3)], created=NOW - 90 * DAY)
    store.change_subscription(sub, NOW - 40 * DAY, items=[(pro, 5)])     # expansion
    store.change_subscription(sub, NOW - 20 * DAY, coupons=["HALF"])     # a new discount
    store.cancel_subscription(sub, NOW - 2 * DAY)                        # churn

Payment failures are status changes: `fail_payment` (past_due, at the
payment attempt), `recover_payment` (active again: the open invoices are paid
then), `mark_unpaid`. A trial ends with `end_trial(converted=...)`.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Iterable, Iterator

from exporter.simulator import history
from exporter.simulator.history import BILLING, TERMINAL, ItemState, Segment, SubState, Timeline
from exporter.simulator.periods import DAY, HOUR

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


class SubscriptionHistories:
    """Mixin of StripeStore: subscriptions as timelines (needs the store's tables)."""

    # ------------------------------------------------------------------ creation

    def add_subscription(self, customer: Any, items: Iterable[Any], *, status: str = "active",
                         coupons: Iterable[Any] = (), cancel_at_period_end: bool = False,
                         created: int | None = None, trial_end: int | None = None,
                         trial_start: int | None = None, canceled_at: int | None = None,
                         ended_at: int | None = None, billing_cycle_anchor: int | None = None,
                         cancellation_reason: str | None = None,
                         collection_method: str = "charge_automatically",
                         discount_start: int | None = None, metadata: dict | None = None,
                         id: str | None = None) -> dict:
        """A subscription with its items and discounts, and a plausible history.

        `items`: price ids/dicts, or `(price, quantity)` / `(price, quantity, [coupons])`
        tuples (item-level coupons). `coupons`: subscription-level coupons (ids or
        dicts). Periods follow the billing anchor and each item's interval;
        trialing subscriptions use the trial as their period, ended ones their
        last period. Discounts start at `discount_start` (default `created`).

        The history starts at `created` (trialing if a trial is given, else
        active or incomplete) and reaches `status` the way Stripe would: a trial
        converts at `trial_end`; `canceled` ends at `ended_at` (scheduled at
        `canceled_at` when that is earlier); `past_due` fails at the latest
        payment, `unpaid` a week after it; `paused` at the end of the trial;
        `incomplete_expired` 23 hours after creation.
        """
        with self._lock:
            if status not in SUBSCRIPTION_STATUSES:
                raise ValueError(f"status must be one of {SUBSCRIPTION_STATUSES}, not {status!r}")
            cus = self._resolve("customers", customer, "customer")
            specs = [self._item_spec(i) for i in items]
            if not specs:
                raise ValueError("a subscription needs at least one item")
            for price, _, _ in specs:
                if price["recurring"] is None:
                    raise ValueError(f"price {price['id']} is one-time; subscriptions need "
                                     "recurring prices")
            now = self.now
            created = now if created is None else int(created)
            if created > now:
                raise ValueError("a subscription cannot be created after store.now")
            sub_id = id or self.new_id("sub", "subscriptions")
            if status in ("trialing", "paused") or trial_end is not None:
                trial_start = created if trial_start is None else trial_start
                if trial_end is None:
                    days = specs[0][0]["recurring"]["trial_period_days"] or 14
                    trial_end = trial_start + days * DAY
            if status == "incomplete_expired" and ended_at is None:
                ended_at = created + 23 * HOUR
            if status == "canceled":
                canceled_at = canceled_at or ended_at or now
                ended_at = ended_at or canceled_at
            if cancellation_reason is None and (canceled_at or cancel_at_period_end):
                cancellation_reason = "cancellation_requested"
            start = created if discount_start is None else discount_start
            item_states = tuple(self._new_item(sub_id, cus["id"], price, quantity, item_coupons or (),
                                               created, start)
                                for price, quantity, item_coupons in specs)
            discounts = tuple(self.add_discount(c, customer=cus["id"], start=start,
                                                subscription=sub_id)["id"] for c in coupons)
            # A trial that has a beginning here and an end in the past (or that is
            # still on, or that was cut short by a cancellation) opens the history.
            in_trial = trial_end is not None and trial_end > created and (
                status == "trialing" or trial_end <= now
                or (status == "canceled" and ended_at <= trial_end))
            if status in ("incomplete", "incomplete_expired"):
                first_status = "incomplete"
            elif in_trial or status == "trialing":
                first_status = "trialing"
            elif status == "paused":
                first_status = "paused"
            else:
                first_status = "active"
            base = SubState(
                status=first_status, items=item_states, discounts=discounts,
                billing_cycle_anchor=billing_cycle_anchor or trial_end or created,
                trial_start=trial_start, trial_end=trial_end, collection_method=collection_method,
                end_behavior="pause" if status == "paused" else "create_invoice")
            tl = Timeline(id=sub_id, customer=cus["id"], created=created,
                          currency=specs[0][0]["currency"], order=len(self.timelines),
                          metadata=dict(metadata or {}))
            self.timelines[sub_id] = tl
            self._subs_of.setdefault(cus["id"], []).append(sub_id)
            tl.append(Segment(created, base))
            self._synthesize(tl, status, trial_end=trial_end, canceled_at=canceled_at,
                             ended_at=ended_at, reason=cancellation_reason,
                             cancel_at_period_end=cancel_at_period_end)
            return self._changed(tl)

    def _synthesize(self, tl: Timeline, status: str, *, trial_end: int | None,
                    canceled_at: int | None, ended_at: int | None, reason: str | None,
                    cancel_at_period_end: bool) -> None:
        """The segments that lead from the first state to `status` (add_subscription)."""
        now = self.now
        st = tl.last
        if st.status == "trialing" and status != "trialing" and trial_end <= now:
            if status == "paused":
                self._push(tl, trial_end, replace(st, status="paused", end_behavior="pause"), False)
                return
            if not (status == "canceled" and ended_at <= trial_end):
                self._push(tl, trial_end, replace(st, status="active", billing_cycle_anchor=trial_end),
                           False)
        st = tl.last
        if status == "canceled":
            if canceled_at < ended_at:  # requested earlier, effective at ended_at
                at = max(canceled_at, tl.starts[-1])
                self._push(tl, at, replace(st, cancel_at=ended_at, canceled_at=canceled_at,
                                           cancellation_reason=reason))
            else:
                self._push(tl, max(ended_at, tl.starts[-1]), replace(
                    st, status="canceled", ended_at=ended_at, canceled_at=canceled_at,
                    cancellation_reason=reason))
            return
        if status == "incomplete_expired":
            self._push(tl, ended_at, replace(st, status="incomplete_expired", ended_at=ended_at),
                       False)
            return
        if status in ("past_due", "unpaid"):
            failed = self._latest_attempt(tl, now)
            self._push(tl, failed, replace(st, status="past_due"), False)
            if status == "unpaid":
                at = max(failed, min(failed + 7 * DAY, now))
                self._push(tl, at, replace(tl.last, status="unpaid"), False)
        if cancel_at_period_end:
            at = tl.starts[-1] if canceled_at is None else max(canceled_at, tl.starts[-1])
            if canceled_at is None:
                canceled_at = now
            st = tl.last
            end = self._period_end(tl, st, now)
            flagged = replace(st, cancel_at_period_end=True, cancel_at=end, canceled_at=canceled_at,
                              cancellation_reason=reason)
            if at == tl.starts[-1] and len(tl.segments) == 1:
                tl.segments[0] = Segment(tl.starts[0], flagged)
            else:
                self._push(tl, at, flagged)

    def _latest_attempt(self, tl: Timeline, now: int) -> int:
        """When the latest payment was attempted (for a failure placed there)."""
        t = history.last_issue_time(self, tl, now)
        if t is None:
            return tl.starts[-1]
        point = next(history.issue_points(self, tl, t, t + 1))
        attempt = point.attempt if point.attempt <= now else t
        return max(attempt, tl.starts[-1])

    def _new_item(self, sub_id: str, customer: str, price: dict, quantity: int,
                  coupons: Iterable[Any], created: int, discount_start: int) -> ItemState:
        item_id = self.new_id("si", "subscription_items", short=True)
        discounts = tuple(self.add_discount(c, customer=customer, start=discount_start,
                                            subscription=sub_id, subscription_item=item_id)["id"]
                          for c in coupons)
        metered = price["recurring"]["usage_type"] == "metered"
        return ItemState(item_id, price["id"], None if metered else quantity, discounts, created)

    # ------------------------------------------------------------------ changes

    def change_subscription(self, subscription: Any, at: int | None = None, *,
                            items: Iterable[Any] | None = None, status: str | None = None,
                            coupons: Iterable[Any] | None = None,
                            cancel_at_period_end: bool | None = None,
                            trial_end: int | None = None, billing_cycle_anchor: int | None = None,
                            collection_method: str | None = None,
                            cancellation_reason: str | None = None, request: bool = True) -> dict:
        """Change a subscription at `at` (default `store.now`); returns the current object.

        - `items`: the new item list, as in add_subscription. An item keeps its id
          (and, given without coupons, its discounts) when its price stays, or
          when another price of the same product replaces it (a plan change).
        - `coupons`: the new subscription-level discounts (coupons, or ids of its
          current discounts); current discounts not named are removed.
        - `status`: trialing/paused -> active starts a new billing period at `at`.
          A new billing interval also resets the anchor to `at`.
        - `cancel_at_period_end=True` schedules the cancellation at the end of the
          current period (`cancel_at`), False takes it back.
        A change that changes nothing is ignored.
        """
        with self._lock:
            tl = self._timeline(subscription)
            at, cur = self._writable(tl, at)
            new = cur
            if items is not None:
                new = replace(new, items=self._next_items(tl, cur, items, at))
            if coupons is not None:
                new = replace(new, discounts=self._next_discounts(tl, cur.discounts, coupons, at))
            if status is not None:
                if status not in SUBSCRIPTION_STATUSES or status in TERMINAL:
                    raise ValueError(f"use cancel_subscription / expire_incomplete for {status!r}")
                new = replace(new, status=status)
                if cur.status in ("trialing", "paused") and status in BILLING:
                    trial_end_now = min(cur.trial_end or at, at) if cur.status == "trialing" else cur.trial_end
                    new = replace(new, billing_cycle_anchor=at, trial_end=trial_end_now)
                if status == "paused":
                    new = replace(new, end_behavior="pause")
            if (items is not None and new.status in BILLING and cur.items
                    and history.intervals(self, new)[0] != history.intervals(self, cur)[0]):
                new = replace(new, billing_cycle_anchor=at)
            if trial_end is not None:
                new = replace(new, trial_end=int(trial_end))
                if new.status == "trialing":
                    new = replace(new, billing_cycle_anchor=int(trial_end))
            if billing_cycle_anchor is not None:
                new = replace(new, billing_cycle_anchor=int(billing_cycle_anchor))
            if collection_method is not None:
                new = replace(new, collection_method=collection_method)
            if cancel_at_period_end is True and not cur.cancel_at_period_end:
                new = replace(new, cancel_at_period_end=True, canceled_at=at,
                              cancel_at=self._period_end(tl, new, at),
                              cancellation_reason=cancellation_reason or "cancellation_requested")
            elif cancel_at_period_end is False and (cur.cancel_at_period_end or cur.cancel_at):
                new = replace(new, cancel_at_period_end=False, cancel_at=None, canceled_at=None,
                              cancellation_reason=None)
            if new != cur:
                self._push(tl, at, new, request)
            return self._changed(tl)

    def cancel_subscription(self, subscription: Any, at: int | None = None, *,
                            at_period_end: bool = False, reason: str = "cancellation_requested",
                            request: bool = True) -> dict:
        """Cancel now (`at`), or at the end of the current period (`at_period_end`)."""
        if at_period_end:
            return self.change_subscription(subscription, at, cancel_at_period_end=True,
                                            cancellation_reason=reason, request=request)
        with self._lock:
            tl = self._timeline(subscription)
            at, cur = self._writable(tl, at)
            self._push(tl, at, replace(cur, status="canceled", ended_at=at, canceled_at=at,
                                       cancel_at=None, cancel_at_period_end=False,
                                       cancellation_reason=reason), request)
            return self._changed(tl)

    def end_trial(self, subscription: Any, at: int | None = None, converted: bool = True, *,
                  lapse_to: str = "canceled") -> dict:
        """End a trial (default at its `trial_end`): converted -> active with a first
        paid period from `at`; otherwise canceled, or paused (`lapse_to="paused"`)."""
        with self._lock:
            tl = self._timeline(subscription)
            st = tl.last
            if st.status != "trialing":
                raise ValueError(f"{tl.id} is {st.status}, not trialing")
            at = st.trial_end if at is None else int(at)
            at, cur = self._writable(tl, at)
            if converted:
                new = replace(cur, status="active", trial_end=min(cur.trial_end, at),
                              billing_cycle_anchor=at)
            elif lapse_to == "paused":
                new = replace(cur, status="paused", end_behavior="pause")
            elif lapse_to == "canceled":
                new = replace(cur, status="canceled", ended_at=at, canceled_at=at,
                              cancellation_reason="cancellation_requested")
            else:
                raise ValueError("lapse_to is canceled or paused")
            self._push(tl, at, new, False)
            return self._changed(tl)

    def pause_subscription(self, subscription: Any, at: int | None = None) -> dict:
        return self.change_subscription(subscription, at, status="paused", request=False)

    def resume_subscription(self, subscription: Any, at: int | None = None) -> dict:
        """Paused -> active, billing from `at` (an invoice is issued then)."""
        return self.change_subscription(subscription, at, status="active")

    def fail_payment(self, subscription: Any, at: int | None = None) -> dict:
        """The payment attempted at `at` (default: the latest attempt) failed: past_due."""
        with self._lock:
            tl = self._timeline(subscription)
            at = self._latest_attempt(tl, self.now) if at is None else at
            return self.change_subscription(tl.id, at, status="past_due", request=False)

    def recover_payment(self, subscription: Any, at: int | None = None) -> dict:
        """A retry succeeded at `at`: active again, the open invoices are paid."""
        return self.change_subscription(subscription, at, status="active", request=False)

    def mark_unpaid(self, subscription: Any, at: int | None = None) -> dict:
        return self.change_subscription(subscription, at, status="unpaid", request=False)

    def expire_incomplete(self, subscription: Any, at: int | None = None) -> dict:
        """An incomplete subscription's first payment never succeeded (23 hours in Stripe)."""
        with self._lock:
            tl = self._timeline(subscription)
            at, cur = self._writable(tl, at)
            if cur.status != "incomplete":
                raise ValueError(f"{tl.id} is {cur.status}, not incomplete")
            self._push(tl, at, replace(cur, status="incomplete_expired", ended_at=at), False)
            return self._changed(tl)

    # ------------------------------------------------------------------ reading histories

    def timeline(self, subscription: Any) -> Timeline:
        """The subscription's timeline (segments of (start, SubState)); do not mutate."""
        with self._lock:
            return self._timeline(subscription)

    def subscription_at(self, subscription: Any, t: int) -> dict | None:
        """The subscription object as it was at `t` (None before it existed)."""
        with self._lock:
            tl = self._timeline(subscription)
            if t < tl.created:
                return None
            return history.render_subscription(self, tl, int(t))

    def state_at(self, subscription: Any, t: int) -> SubState | None:
        """The subscription's state at `t`, derived changes applied (None before it existed)."""
        with self._lock:
            tl = self._timeline(subscription)
            return None if t < tl.created else history.effective_state(self, tl, int(t))

    def subscriptions_of(self, customer: Any) -> list[str]:
        """The customer's subscription ids, oldest first."""
        with self._lock:
            cus_id = customer["id"] if isinstance(customer, dict) else customer
            return list(self._subs_of.get(cus_id, ()))

    def subscription_owners(self) -> dict[str, list[str]]:
        """customer id -> subscription ids (oldest first), for customers that have any."""
        with self._lock:
            return {customer: list(subs) for customer, subs in self._subs_of.items()}

    # ------------------------------------------------------------------ the clock

    def advance(self, to: float) -> None:
        """Move `store.now` forward; periods roll and scheduled changes happen."""
        with self._lock:
            to = int(to)
            if to <= self.now:
                return
            self.now = to
            self.version += 1
            for tl in self.timelines.values():
                last = tl.segments[-1]
                if last.state.status not in TERMINAL:
                    self._changed(tl)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Re-render changed subscriptions once at the end (for building large histories)."""
        with self._lock:
            outer = self._batching
            self._batching = True
            try:
                yield
            finally:
                self._batching = outer
                if not outer:
                    for sub_id in list(self._dirty):
                        self._changed(self.timelines[sub_id])
                    self._dirty.clear()

    # ------------------------------------------------------------------ internals

    def _timeline(self, subscription: Any) -> Timeline:
        sub_id = subscription["id"] if isinstance(subscription, dict) else subscription
        tl = self.timelines.get(sub_id)
        if tl is None:
            raise KeyError(f"no such subscription: {sub_id!r}")
        return tl

    def _writable(self, tl: Timeline, at: int | None) -> tuple[int, SubState]:
        at = self.now if at is None else int(at)
        if at > self.now:
            raise ValueError(f"{tl.id}: a change at {at} is after store.now ({self.now}); "
                             "advance the clock first")
        if at < tl.starts[-1]:
            raise ValueError(f"{tl.id}: a change at {at} is older than its last change "
                             f"({tl.starts[-1]}); histories are written in time order")
        cur = history.effective_state(self, tl, at)
        if cur.status in TERMINAL:
            raise ValueError(f"{tl.id} has ended ({cur.status}); start a new subscription")
        return at, cur

    def _push(self, tl: Timeline, at: int, state: SubState, request: bool = True) -> None:
        tl.append(Segment(int(at), state, request))
        self.version += 1

    def _period_end(self, tl: Timeline, st: SubState, at: int) -> int:
        ends = [history.item_period(tl, st, self.get("prices", i.price), at)[1] for i in st.items]
        return max(ends)

    def _next_items(self, tl: Timeline, cur: SubState, specs: Iterable[Any], at: int
                    ) -> tuple[ItemState, ...]:
        old = list(cur.items)
        parsed = [self._item_spec(s) for s in specs]
        if not parsed:
            raise ValueError("a subscription needs at least one item")
        matched: list[ItemState | None] = []
        for price, _, _ in parsed:  # the same price first, then the same product
            match = next((o for o in old if o.price == price["id"]), None)
            if match is None:
                match = next((o for o in old if self.get("prices", o.price)["product"]
                              == price["product"]), None)
            if match is not None:
                old.remove(match)
            matched.append(match)
        result = []
        for (price, quantity, coupons), match in zip(parsed, matched):
            if price["recurring"] is None or price["currency"] != tl.currency:
                raise ValueError(f"price {price['id']} must be recurring and in {tl.currency}")
            metered = price["recurring"]["usage_type"] == "metered"
            if match is None:
                item = self._new_item(tl.id, tl.customer, price, quantity, coupons or (), at, at)
            else:
                discounts = match.discounts if coupons is None else self._next_discounts(
                    tl, match.discounts, coupons, at, match.id)
                item = ItemState(match.id, price["id"], None if metered else quantity, discounts,
                                 match.created)
            result.append(item)
        return tuple(result)

    def _next_discounts(self, tl: Timeline, current: tuple[str, ...], coupons: Iterable[Any],
                        at: int, item_id: str | None = None) -> tuple[str, ...]:
        table = self.discount_table()
        by_coupon = {table[d]["source"]["coupon"]: d for d in current}
        result = []
        for ref in coupons:
            ref_id = ref["id"] if isinstance(ref, dict) else ref
            if ref_id in current:
                result.append(ref_id)
            elif ref_id in by_coupon:
                result.append(by_coupon[ref_id])
            else:
                result.append(self.add_discount(ref, customer=tl.customer, start=at,
                                                subscription=tl.id,
                                                subscription_item=item_id)["id"])
        return tuple(result)

    def _changed(self, tl: Timeline) -> dict:
        """Re-render the current object of a timeline into the tables."""
        if self._batching:
            self._dirty.add(tl.id)
            current = self._tables["subscriptions"].get(tl.id)
            return current if current is not None else {"id": tl.id, "object": "subscription"}
        obj = history.render_subscription(self, tl, self.now)
        old = self._tables["subscriptions"].get(tl.id)
        if old == obj:
            return old
        self._replace("subscriptions", obj)
        items = self._tables["subscription_items"]
        for item in (old or {}).get("items", {}).get("data", ()):
            items.pop(item["id"], None)
        for item in obj["items"]["data"]:
            items[item["id"]] = item
        self._newest_first.pop("subscription_items", None)
        self._update_customer(tl.customer, tl.currency)
        return obj

    def _update_customer(self, customer_id: str, currency: str) -> None:
        cus = self._tables["customers"][customer_id]
        subs = self._tables["subscriptions"]
        delinquent = any(subs[s]["status"] in ("past_due", "unpaid")
                         for s in self._subs_of.get(customer_id, ()) if s in subs)
        if cus["currency"] is None or cus["delinquent"] != delinquent:
            self._replace("customers", {**cus, "currency": cus["currency"] or currency,
                                        "delinquent": delinquent})
