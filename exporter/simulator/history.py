"""Subscription histories: one timeline per subscription, the simulator's source of truth.

A timeline is a list of segments `(start, SubState)`. A state holds what a
subscription object shows that can change: status, items (price, quantity,
item discounts), subscription discounts, trial dates, the billing anchor, a
scheduled cancellation, `ended_at`. Everything else is derived from it:

- the subscription object at any moment (`render_subscription`), so the
  current object is simply the rendering at `store.now`;
- the changes nobody has to write down, at the moment they happen: a billing
  period rolling over (items' `current_period_*` and `latest_invoice` change),
  a repeating discount reaching its `end` (it leaves the subscription), a
  scheduled cancellation (`cancel_at`) taking effect;
- the events of the last 30 days (`event_index`), each carrying the rendering
  right after its change, and `previous_attributes` with the old values of the
  top-level keys that changed; the invoices (see `invoices.py`).

Faithful to Stripe (API 2026-07-29.dahlia): event envelope and types
(`customer.subscription.created/updated/deleted/paused/resumed/trial_will_end`,
`customer.discount.created/deleted`), `previous_attributes` holding old values
of changed top-level keys (`items` as the whole old list object, `discounts` as
ids), renewals emitting `customer.subscription.updated`, automatic changes
having `request.id` null.

Charges, refunds and disputes are not histories: the events of their status
changes (`refund.updated`, `charge.dispute.closed`, ...) are kept as rendered
when they happen (payments.py) and listed with these (`StoredEvent`).

Simplified: one event per change (no `invoice.*` or `customer.*` events, no
`charge.*` event when a charge or refund is created); events are re-rendered from the timeline on request, so an
object embedded in an old event shows today's price objects; item ids survive a
change when the same price (or another price of the same product) stays.
"""

from __future__ import annotations

import copy
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator

from exporter.simulator.periods import DAY, HOUR, add_interval, boundaries, last_boundary, \
    period_containing, stable_id

if TYPE_CHECKING:  # pragma: no cover
    from exporter.simulator.stripe_store import StripeStore

API_VERSION = "2026-07-29.dahlia"
EVENT_RETENTION = 30 * DAY  # Stripe serves the events of the last 30 days
TERMINAL = frozenset({"canceled", "incomplete_expired"})
BILLING = frozenset({"active", "past_due", "unpaid"})  # periods roll, invoices are issued
TRIAL_WILL_END = 3 * DAY
# A renewal invoice is a draft for about an hour before Stripe finalizes it and
# attempts the payment; invoices at creation are paid at once.
FINALIZE_DELAY = HOUR
_INF = 1 << 62


# --------------------------------------------------------------------------- states


@dataclass(frozen=True, slots=True)
class ItemState:
    """One subscription item: its id survives quantity changes."""

    id: str
    price: str
    quantity: int | None  # None for metered prices
    discounts: tuple[str, ...] = ()
    created: int = 0


@dataclass(frozen=True, slots=True)
class SubState:
    status: str
    items: tuple[ItemState, ...]
    discounts: tuple[str, ...] = ()
    billing_cycle_anchor: int = 0
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    cancellation_reason: str | None = None
    ended_at: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    collection_method: str = "charge_automatically"
    end_behavior: str = "create_invoice"  # trial_settings.end_behavior.missing_payment_method

    def discount_ids(self) -> Iterator[str]:
        yield from self.discounts
        for item in self.items:
            yield from item.discounts


@dataclass(frozen=True, slots=True)
class Segment:
    start: int
    state: SubState
    request: bool = True  # made by an API request (its events carry a request id)


@dataclass(slots=True)
class Timeline:
    """The history of one subscription; segments are appended, never rewritten."""

    id: str
    customer: str
    created: int
    currency: str
    order: int  # creation order in the store (breaks ties between events)
    metadata: dict = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    version: int = 0

    def index_at(self, t: int) -> int:
        """The segment in force at `t` (the last one starting at or before it), or -1."""
        return bisect_right(self.starts, t) - 1

    def append(self, segment: Segment) -> None:
        if self.starts and segment.start < self.starts[-1]:
            raise ValueError(f"{self.id}: a change at {segment.start} is older than the "
                             f"last one ({self.starts[-1]}); histories are appended in order")
        self.segments.append(segment)
        self.starts.append(segment.start)
        self.version += 1

    @property
    def last(self) -> SubState:
        return self.segments[-1].state


# --------------------------------------------------------------------------- state at a moment


def effective_state(store: "StripeStore", tl: Timeline, t: int, index: int | None = None) -> SubState:
    """The state at `t`: the segment in force (or segment `index`) with the derived
    changes applied: a scheduled cancellation that has happened, ended discounts."""
    i = tl.index_at(t) if index is None else index
    if i < 0:
        raise ValueError(f"{tl.id} did not exist at {t}")
    st = tl.segments[i].state
    if st.status not in TERMINAL and st.cancel_at is not None and t >= st.cancel_at:
        st = replace(st, status="canceled", ended_at=st.cancel_at,
                     canceled_at=st.canceled_at or st.cancel_at)
    horizon = min(t, st.ended_at) if st.status in TERMINAL and st.ended_at is not None else t
    return _without_ended_discounts(store, st, horizon)


def _without_ended_discounts(store: "StripeStore", st: SubState, t: int) -> SubState:
    table = store.discount_table()

    def live(ids: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d for d in ids if table[d]["end"] is None or table[d]["end"] > t)

    if all(table[d]["end"] is None or table[d]["end"] > t for d in st.discount_ids()):
        return st
    return replace(st, discounts=live(st.discounts),
                   items=tuple(replace(i, discounts=live(i.discounts)) for i in st.items))


def item_period(tl: Timeline, st: SubState, price: dict, ref: int) -> tuple[int, int]:
    """An item's billing period [start, end) containing `ref`."""
    rec = price["recurring"]
    if st.status in ("trialing", "paused") and st.trial_start is not None:
        return st.trial_start, st.trial_end
    if st.status in ("incomplete", "incomplete_expired"):
        return tl.created, add_interval(tl.created, rec["interval"], rec["interval_count"])
    anchor = st.billing_cycle_anchor
    if ref < anchor:  # a first, prorated period up to a later anchor
        return tl.created, anchor
    return period_containing(anchor, ref, rec["interval"], rec["interval_count"])


def intervals(store: "StripeStore", st: SubState) -> list[tuple[str, int]]:
    """The distinct billing intervals of a state's items (first item's first)."""
    seen: list[tuple[str, int]] = []
    for item in st.items:
        rec = store.get("prices", item.price)["recurring"]
        key = (rec["interval"], rec["interval_count"])
        if key not in seen:
            seen.append(key)
    return seen


# --------------------------------------------------------------------------- rendering


def render_subscription(store: "StripeStore", tl: Timeline, t: int,
                        index: int | None = None) -> dict:
    """The subscription object as the API showed it at `t` (after the changes at `t`)."""
    i = tl.index_at(t) if index is None else index
    st = effective_state(store, tl, t, i)
    ref = st.ended_at - 1 if st.status in TERMINAL and st.ended_at else t
    items = [_render_item(store, tl, st, item, ref) for item in st.items]
    latest = last_issue_time(store, tl, t, i)
    sub_id = tl.id
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": st.billing_cycle_anchor,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": st.cancel_at,
        "cancel_at_period_end": st.cancel_at_period_end,
        "canceled_at": st.canceled_at,
        "cancellation_details": {"comment": None, "feedback": None,
                                 "reason": st.cancellation_reason},
        "collection_method": st.collection_method,
        "created": tl.created,
        "currency": tl.currency,
        "customer": tl.customer,
        "customer_account": None,
        "days_until_due": 30 if st.collection_method == "send_invoice" else None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": list(st.discounts),
        "ended_at": st.ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None if latest is None else invoice_id(store, tl, latest),
        "livemode": store.livemode,
        "managed_payments": {"enabled": False},
        "metadata": dict(tl.metadata),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": tl.created,
        "status": st.status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": st.trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": st.end_behavior}},
        "trial_start": st.trial_start,
    }


def _render_item(store: "StripeStore", tl: Timeline, st: SubState, item: ItemState, ref: int) -> dict:
    price = store.get("prices", item.price)
    start, end = item_period(tl, st, price, ref)
    out = {
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": item.created,
        "current_period_end": end,
        "current_period_start": start,
        "discounts": list(item.discounts),
        "metadata": {},
        "plan": plan_from_price(price),
        "price": copy.deepcopy(price),
        "quantity": item.quantity,
        "subscription": tl.id,
        "tax_rates": [],
    }
    if item.quantity is None:
        del out["quantity"]  # metered items bill usage, not a quantity
    return out


def plan_from_price(price: dict) -> dict:
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


# --------------------------------------------------------------------------- invoice moments


@dataclass(frozen=True, slots=True)
class IssuePoint:
    """A moment an invoice is issued: `t` (its `created`), the segment in force,
    and Stripe's billing_reason."""

    t: int
    index: int
    reason: str

    @property
    def attempt(self) -> int:
        """When the payment is attempted (the invoice is finalized)."""
        return self.t + (FINALIZE_DELAY if self.reason == "subscription_cycle" else 0)


def _segment_end(tl: Timeline, i: int) -> int:
    return tl.starts[i + 1] if i + 1 < len(tl.starts) else _INF


def start_reason(tl: Timeline, i: int) -> str | None:
    """The billing_reason of an invoice issued by segment `i` starting, if any:
    creation, a trial ending into a paid plan, a resume or a new billing anchor."""
    st = tl.segments[i].state
    if i == 0:
        return "subscription_create" if st.status in BILLING or st.status == "incomplete" else None
    if st.status not in BILLING:
        return None
    prev = tl.segments[i - 1].state
    if prev.status == "trialing":
        return "subscription_cycle"
    if prev.status == "paused":
        return "subscription_update"
    if st.billing_cycle_anchor != prev.billing_cycle_anchor and st.billing_cycle_anchor == tl.starts[i]:
        return "subscription_update"
    return None


def _paying_end(tl: Timeline, i: int) -> int:
    """Where segment `i` stops rolling periods: the next segment or its cancel_at."""
    end = _segment_end(tl, i)
    cancel_at = tl.segments[i].state.cancel_at
    return min(end, cancel_at) if cancel_at is not None else end


def segment_issue_points(store: "StripeStore", tl: Timeline, i: int, lo: int, hi: int
                         ) -> Iterator[IssuePoint]:
    """Invoices issued while segment `i` is in force, with lo <= t < hi, ascending."""
    seg = tl.segments[i]
    st, s = seg.state, seg.start
    reason = start_reason(tl, i)
    if reason and lo <= s < hi:
        yield IssuePoint(s, i, reason)
    if st.status not in BILLING:
        return
    a, b = max(lo, s), min(hi, _paying_end(tl, i))
    if b <= a:
        return
    keys = intervals(store, st)
    if len(keys) == 1:
        times: Iterator[int] = boundaries(st.billing_cycle_anchor, *keys[0], a, b)
    else:
        times = iter(sorted({x for key in keys
                             for x in boundaries(st.billing_cycle_anchor, *key, a, b)}))
    for t in times:
        if t == s and reason:
            continue
        if t > tl.created:
            yield IssuePoint(t, i, "subscription_cycle")


def issue_points(store: "StripeStore", tl: Timeline, lo: int = 0, hi: int = _INF
                 ) -> Iterator[IssuePoint]:
    """Every invoice the timeline issues with lo <= t < hi, ascending (lazy)."""
    for i, s in enumerate(tl.starts):
        if s >= hi:
            return
        if _segment_end(tl, i) <= lo:
            continue
        yield from segment_issue_points(store, tl, i, lo, hi)


def last_issue_time(store: "StripeStore", tl: Timeline, t: int, index: int | None = None) -> int | None:
    """When the latest invoice at or before `t` was issued (segments up to `index`)."""
    i = tl.index_at(t) if index is None else index
    for j in range(i, -1, -1):
        seg = tl.segments[j]
        st, s = seg.state, seg.start
        best = s if start_reason(tl, j) and s <= t else None
        if st.status in BILLING:
            hi = min(t, _paying_end(tl, j) - 1)
            for key in intervals(store, st):
                b = last_boundary(st.billing_cycle_anchor, *key, hi)
                if b is not None and b >= s and b > tl.created and (best is None or b > best):
                    best = b
        if best is not None:
            return best
    return None


def invoice_id(store: "StripeStore", tl: Timeline, t: int) -> str:
    return stable_id("in", store.account_fragment, tl.id, t)


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class EventStub:
    """An event before rendering: what the list filters need, and where to render from."""

    id: str
    created: int
    type: str
    sub: str
    index: int
    prev: tuple[int, int] | None  # (time, segment) to render `previous_attributes` from
    request: bool
    order: tuple
    discount: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


def change_points(store: "StripeStore", tl: Timeline, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    """(t, segment, explicit) of every change with lo <= t <= hi, ascending. A
    derived change at the moment a segment starts is part of that segment's."""
    points: dict[tuple[int, int], bool] = {}
    table = store.discount_table()
    for i, seg in enumerate(tl.segments):
        s = seg.start
        if s > hi:
            break
        if lo <= s:
            points[(s, i)] = True
        end = _segment_end(tl, i)
        st = seg.state
        if end <= lo or st.status in TERMINAL:
            continue
        if st.cancel_at is not None and st.cancel_at < end:
            end = st.cancel_at
            if s < end and lo <= end <= hi:
                points.setdefault((end, i), False)
        for d in st.discount_ids():
            e = table[d]["end"]
            if e is not None and s < e < end and lo <= e <= hi:
                points.setdefault((e, i), False)
        if st.status in BILLING:
            for key in intervals(store, st):
                for b in boundaries(st.billing_cycle_anchor, *key, max(lo, s + 1), min(hi + 1, end)):
                    points.setdefault((b, i), False)
    return sorted((t, i, explicit) for (t, i), explicit in points.items())


def event_stubs(store: "StripeStore", tl: Timeline, lo: int, hi: int) -> list[EventStub]:
    """The events of one subscription created in [lo, hi], oldest first."""
    last = tl.segments[-1]
    if tl.created > hi or (last.start < lo and last.state.status in TERMINAL):
        return []
    stubs: list[EventStub] = []
    frag = store.account_fragment

    def add(t: int, kind: str, i: int, prev: tuple[int, int] | None, request: bool,
            discount: str | None = None) -> None:
        stubs.append(EventStub(
            id=stable_id("evt", frag, tl.id, t, i, kind, discount or ""), created=t, type=kind,
            sub=tl.id, index=i, prev=prev, request=request,
            order=(t, tl.order, len(stubs)), discount=discount))

    for t, i, explicit in change_points(store, tl, lo, hi):
        after = effective_state(store, tl, t, i)
        request = explicit and tl.segments[i].request
        if explicit and i == 0:
            add(t, "customer.subscription.created", i, None, request)
            for d in after.discount_ids():
                add(t, "customer.discount.created", i, None, request, d)
            continue
        if explicit and tl.starts[i - 1] == t:
            prev = (t, i - 1)
        else:
            prev = (t - 1, tl.index_at(t - 1))
        before = effective_state(store, tl, *prev)
        if after.status == "canceled" and before.status != "canceled":
            add(t, "customer.subscription.deleted", i, None, request)
        else:
            add(t, "customer.subscription.updated", i, prev, request)
            if after.status == "paused" and before.status != "paused":
                add(t, "customer.subscription.paused", i, None, request)
            elif before.status == "paused" and after.status != "paused":
                add(t, "customer.subscription.resumed", i, None, request)
        old, new = set(before.discount_ids()), set(after.discount_ids())
        for d in before.discount_ids():
            if d not in new:
                add(t, "customer.discount.deleted", i, None, request, d)
        for d in after.discount_ids():
            if d not in old:
                add(t, "customer.discount.created", i, None, request, d)

    for i, seg in enumerate(tl.segments):  # three days before a trial ends
        st = seg.state
        if st.status == "trialing" and st.trial_end is not None:
            w = st.trial_end - TRIAL_WILL_END
            if seg.start <= w < _segment_end(tl, i) and lo <= w <= hi:
                add(w, "customer.subscription.trial_will_end", i, None, False)
    return stubs


@dataclass(slots=True)
class StoredEvent:
    """An event kept as it was rendered when it happened (payments.py)."""

    event: dict
    order: tuple

    @property
    def id(self) -> str:
        return self.event["id"]

    @property
    def created(self) -> int:
        return self.event["created"]

    def get(self, name: str, default: Any = None) -> Any:
        return self.event.get(name, default)


def materialize_event(store: "StripeStore", stub: "EventStub | StoredEvent") -> dict:
    """The event object, rendered from the timeline (or as it was kept)."""
    if isinstance(stub, StoredEvent):
        return copy.deepcopy(stub.event)
    tl = store.timelines[stub.sub]
    if stub.discount is not None:
        data: dict[str, Any] = {"object": copy.deepcopy(store.discount_table()[stub.discount])}
    else:
        obj = render_subscription(store, tl, stub.created, stub.index)
        data = {"object": obj}
        if stub.prev is not None:
            before = render_subscription(store, tl, *stub.prev)
            data["previous_attributes"] = {k: v for k, v in before.items() if obj.get(k) != v}
    request = {"id": None, "idempotency_key": None}
    if stub.request:
        token = stable_id("req", store.account_fragment, stub.id)
        request = {"id": "req_" + token[-14:], "idempotency_key": token[6:14] + "-" + token[-12:]}
    return {
        "id": stub.id,
        "object": "event",
        "api_version": API_VERSION,
        "created": stub.created,
        "data": data,
        "livemode": store.livemode,
        "pending_webhooks": 0,
        "request": request,
        "type": stub.type,
    }


def event_index(store: "StripeStore") -> list[EventStub | StoredEvent]:
    """Every event Stripe still keeps (the last 30 days), newest first."""
    now = store.now
    lo = now - EVENT_RETENTION
    stubs: list[EventStub | StoredEvent] = []
    for tl in store.timelines.values():
        stubs.extend(event_stubs(store, tl, lo, now))
    # After the subscriptions' events of the same second, in the order they happened.
    stubs.extend(StoredEvent(event, (event["created"], _INF, k))
                 for k, event in enumerate(store.stored_events) if lo <= event["created"] <= now)
    stubs.sort(key=lambda e: e.order, reverse=True)
    return stubs
