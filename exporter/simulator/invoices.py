"""Invoices derived from the subscription timelines, built lazily on request.

An invoice is issued when a subscription is created (unless it starts with a
trial), when a trial ends into a paid plan, when a paused subscription resumes
or its billing anchor is reset (a change of billing interval), and at every
period start while it is `active`, `past_due` or `unpaid`. None while
trialing, paused or after it ended. Its fate follows the timeline: paid when
the subscription is active at the payment attempt; otherwise open until the
subscription becomes active again (paid then), uncollectible if it ends,
void if an incomplete subscription expires. A renewal is a `draft` for an hour
before it is finalized and attempted, as in Stripe; invoices issued while the
subscription is `unpaid` stay drafts and are never attempted.

Only light records are kept per subscription (cached until its history or
the clock moves on); objects are rendered for the page asked for.

Faithful (dahlia): the invoice and line item shapes, `parent.subscription_details`,
line `parent.subscription_item_details` and `pricing.price_details`; line
`amount` before discounts and `discount_amounts` per discount (item discounts
first, then the subscription's: a percent per line, an amount_off spread over
the lines pro rata); repeating discounts until their `end`, `once` discounts
on the first invoice only; licensed lines bill the item's new period in
advance, metered lines the usage of the period just ended (first invoice: no
usage line); tiers by tiers_mode, transform_quantity; invoice `period_start`
and `period_end` are the period just ended, as Stripe sets them on renewals
(use the line periods for the service period).

Simplified: no prorations (a mid-period change shows on the next invoice), no
taxes, credit notes, invoice items, customer balance or payments list;
discount amounts are rounded half-even per line; tiered lines have no
`unit_amount_decimal`; numbers are `PREFIX-0001` in order per customer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from exporter.simulator.history import TERMINAL, IssuePoint, Timeline, effective_state, \
    invoice_id, issue_points, item_period, start_reason
from exporter.simulator.periods import DAY, last_boundary, period_containing, stable_id, stable_int

if TYPE_CHECKING:  # pragma: no cover
    from exporter.simulator.stripe_store import StripeStore

# Smart retries: the first attempt, then three retries (Stripe's default schedule
# is adaptive; a fixed one keeps charges and invoices in step).
RETRY_OFFSETS = (0, 3 * DAY, 5 * DAY, 7 * DAY)
EMBEDDED_LINES = 10
_HORIZON = 2 * DAY  # per-subscription records are computed this far past `now`


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """What the timeline says about one invoice, independent of the clock."""

    id: str
    point: IssuePoint
    outcome: str  # paid, open, uncollectible, void, or draft (issued while unpaid)
    paid_at: int | None
    closed_at: int | None  # when it became uncollectible or void

    @property
    def t(self) -> int:
        return self.point.t

    @property
    def attempt(self) -> int:
        return self.point.attempt


class InvoiceStub:
    """An index entry: the fields the list filters need, and the record."""

    __slots__ = ("id", "created", "customer", "subscription", "status", "collection_method",
                 "record", "number")

    def __init__(self, record: InvoiceRecord, tl: Timeline, status: str, collection_method: str):
        self.id = record.id
        self.created = record.t
        self.customer = tl.customer
        self.subscription = tl.id
        self.status = status
        self.collection_method = collection_method
        self.record = record
        self.number: int | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


# --------------------------------------------------------------------------- records


def _record(store: "StripeStore", tl: Timeline, point: IssuePoint) -> InvoiceRecord:
    attempt = point.attempt
    j = max(point.index, tl.index_at(attempt))
    st = effective_state(store, tl, attempt, j)
    outcome, paid_at, closed_at = "void", None, None
    if st.status == "active":
        outcome, paid_at = "paid", attempt
    elif st.status == "unpaid":  # Stripe leaves them as drafts, never attempted
        outcome = "draft"
    elif st.status in ("past_due", "incomplete"):
        outcome = "open"
        for k in range(j + 1, len(tl.segments)):
            status = tl.segments[k].state.status
            if status == "active":
                outcome, paid_at = "paid", tl.starts[k]
                break
            if status in TERMINAL:
                outcome = "void" if status == "incomplete_expired" else "uncollectible"
                closed_at = tl.starts[k]
                break
    else:  # ended (or back in a trial) before the attempt
        closed_at = attempt
    return InvoiceRecord(invoice_id(store, tl, point.t), point, outcome, paid_at, closed_at)


def records(store: "StripeStore", tl: Timeline) -> list[InvoiceRecord]:
    """Every invoice of one subscription issued up to a little past `now`, oldest first."""
    now = store.now
    cached = store.invoice_cache.get(tl.id)
    if cached is not None and cached[0] == tl.version and now <= cached[1]:
        return cached[2]
    horizon = now + _HORIZON
    result = [_record(store, tl, p) for p in issue_points(store, tl, 0, horizon + 1)]
    store.invoice_cache[tl.id] = (tl.version, horizon, result)
    return result


def status_at(record: InvoiceRecord, now: int) -> str:
    if record.attempt > now:
        return "draft"
    return record.outcome


def invoice_index(store: "StripeStore") -> list[InvoiceStub]:
    """Every invoice created up to `now`, newest first (numbers assigned)."""
    now = store.now
    stubs: list[InvoiceStub] = []
    for tl in store.timelines.values():
        for rec in records(store, tl):
            if rec.t > now:
                break
            st = tl.segments[rec.point.index].state
            stubs.append(InvoiceStub(rec, tl, status_at(rec, now), st.collection_method))
    stubs.sort(key=lambda s: (s.created, store.timelines[s.subscription].order))
    sequence: dict[str, int] = {}
    for stub in stubs:
        if stub.status != "draft":
            sequence[stub.customer] = stub.number = sequence.get(stub.customer, 0) + 1
    stubs.reverse()
    return stubs


# --------------------------------------------------------------------------- amounts


def billed_units(price: dict, quantity: int) -> int:
    tq = price["transform_quantity"]
    if not tq:
        return quantity
    rounder = math.ceil if tq["round"] == "up" else math.floor
    return rounder(quantity / tq["divide_by"])


def licensed_amount(price: dict, tiers: list | None, quantity: int) -> Decimal:
    """One period of a price for `quantity`, before discounts, in minor units."""
    units = billed_units(price, quantity)
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


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def metered_usage(tl: Timeline, item_id: str, t: int, price: dict) -> int:
    """The (made-up, deterministic) usage reported for a metered item's period."""
    span = 2_000_000 if price["transform_quantity"] else 5_000
    return stable_int(tl.id, item_id, t) % (span + 1)


@dataclass
class Line:
    item_id: str
    price: dict
    quantity: int
    amount: int
    period: tuple[int, int]
    discounts: list[str]
    discount_amounts: list[dict]


def compute_lines(store: "StripeStore", tl: Timeline, point: IssuePoint) -> tuple[list[Line], list[str]]:
    """The invoice's lines with their discounts, and the invoice-level discount ids."""
    t = point.t
    st = effective_state(store, tl, t, point.index)
    at_start = tl.starts[point.index] == t and start_reason(tl, point.index) is not None
    anchor = st.billing_cycle_anchor
    lines: list[Line] = []
    for item in st.items:
        price = store.get("prices", item.price)
        rec = price["recurring"]
        key = (rec["interval"], rec["interval_count"])
        if not at_start and last_boundary(anchor, *key, t) != t:
            continue  # another interval's renewal
        if item.quantity is None:  # metered: the usage of the period that just ended
            if at_start:
                continue
            start = max(period_containing(anchor, t - 1, *key)[0], item.created, tl.created)
            quantity = metered_usage(tl, item.id, t, price)
            amount = _round(Decimal(price["unit_amount_decimal"]) * billed_units(price, quantity))
            period = (start, t)
        else:
            quantity = item.quantity
            amount = _round(licensed_amount(price, store.price_tiers.get(price["id"]), quantity))
            period = item_period(tl, st, price, t)
        lines.append(Line(item.id, price, quantity, amount, period, [], []))

    remaining = [line.amount for line in lines]
    currency = tl.currency
    for k, (line, item) in enumerate(zip(lines, _items_of(st, lines))):
        for d in item.discounts:
            coupon = _coupon_if_applies(store, tl, d, t)
            if coupon is None:
                continue
            if coupon["percent_off"] is not None:
                off = _round(Decimal(remaining[k]) * Decimal(str(coupon["percent_off"])) / 100)
            elif coupon["currency"] == currency:
                off = min(coupon["amount_off"], remaining[k])
            else:
                continue
            remaining[k] -= off
            line.discounts.append(d)
            line.discount_amounts.append({"amount": off, "discount": d})
    invoice_discounts = []
    for d in st.discounts:
        coupon = _coupon_if_applies(store, tl, d, t)
        if coupon is None or not lines:
            continue
        if coupon["percent_off"] is not None:
            pct = Decimal(str(coupon["percent_off"]))
            offs = [_round(Decimal(r) * pct / 100) for r in remaining]
        elif coupon["currency"] == currency:
            offs = _spread(min(coupon["amount_off"], sum(remaining)), remaining)
        else:
            continue
        invoice_discounts.append(d)
        for k, off in enumerate(offs):
            remaining[k] -= off
            lines[k].discount_amounts.append({"amount": off, "discount": d})
    return lines, invoice_discounts


def _items_of(st, lines: list[Line]) -> list:
    by_id = {item.id: item for item in st.items}
    return [by_id[line.item_id] for line in lines]


def _spread(total: int, weights: list[int]) -> list[int]:
    """`total` split over lines in proportion to their amounts; the rest on the last one."""
    whole = sum(weights)
    if whole <= 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    last = max(k for k, w in enumerate(weights) if w > 0)
    shares[last] += total - sum(shares)
    return shares


def _coupon_if_applies(store: "StripeStore", tl: Timeline, discount_id: str, t: int) -> dict | None:
    discount = store.discount_table()[discount_id]
    coupon = store.get("coupons", discount["source"]["coupon"])
    if coupon["duration"] == "once":
        first = next(iter(issue_points(store, tl, discount["start"])), None)
        if first is None or first.t != t:
            return None
    return coupon


def invoice_total(store: "StripeStore", tl: Timeline, record: InvoiceRecord) -> int:
    lines, _ = compute_lines(store, tl, record.point)
    return sum(line.amount - sum(d["amount"] for d in line.discount_amounts) for line in lines)


# --------------------------------------------------------------------------- objects


def attempts(record: InvoiceRecord, until: int) -> list[int]:
    """Payment attempts made up to `until` (and before it was paid or closed)."""
    if record.outcome == "draft" or (record.paid_at is None and record.closed_at is not None
                                     and record.closed_at <= record.attempt):
        return []  # never attempted: issued while unpaid, or voided first
    stop = until
    if record.paid_at is not None:
        stop = min(stop, record.paid_at)
    if record.closed_at is not None:
        stop = min(stop, record.closed_at)
    times = [record.attempt + off for off in RETRY_OFFSETS if record.attempt + off <= stop]
    if record.paid_at is not None and record.paid_at <= until and record.paid_at not in times:
        times.append(record.paid_at)
    return times


def materialize_invoice(store: "StripeStore", stub: InvoiceStub) -> dict:
    record = stub.record
    tl = store.timelines[stub.subscription]
    point = record.point
    now = store.now
    lines, invoice_discounts = compute_lines(store, tl, point)
    line_objects = [_line_object(store, tl, record.id, line) for line in lines]
    subtotal = sum(line.amount for line in lines)
    totals: dict[str, int] = {}
    for line in lines:
        for da in line.discount_amounts:
            totals[da["discount"]] = totals.get(da["discount"], 0) + da["amount"]
    total = subtotal - sum(totals.values())
    status = stub.status
    paid = status == "paid"
    finalized = None if status == "draft" else record.attempt
    customer = store.get("customers", tl.customer) or {}
    st = tl.segments[point.index].state
    tried = attempts(record, now)
    retries_left = [record.attempt + off for off in RETRY_OFFSETS if record.attempt + off > now]
    if point.reason == "subscription_cycle":
        before = effective_state(store, tl, point.t - 1)
        first = store.get("prices", st.items[0].price)
        period = (item_period(tl, before, first, point.t - 1)[0], point.t)
    else:
        period = (point.t, point.t)
    return {
        "id": record.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "KPI Simulator",
        "account_tax_ids": None,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": total if paid else 0,
        "amount_remaining": 0 if paid or status == "void" else total,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": len(tried),
        "attempted": bool(tried),
        "auto_advance": status in ("draft", "open"),
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None,
                          "provider": None, "status": None},
        "automatically_finalizes_at": record.attempt if status == "draft" else None,
        "billing_reason": point.reason,
        "collection_method": st.collection_method,
        "created": point.t,
        "currency": tl.currency,
        "custom_fields": None,
        "customer": tl.customer,
        "customer_account": None,
        "customer_address": customer.get("address"),
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": invoice_discounts,
        "due_date": point.t + 30 * DAY if st.collection_method == "send_invoice" else None,
        "effective_at": finalized,
        "ending_balance": None if finalized is None else 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": line_objects[:EMBEDDED_LINES],
            "has_more": len(line_objects) > EMBEDDED_LINES,
            "url": f"/v1/invoices/{record.id}/lines",
        },
        "livemode": store.livemode,
        "metadata": {},
        "next_payment_attempt": retries_left[0] if status == "open" and retries_left else None,
        "number": None if stub.number is None else f"{customer.get('invoice_prefix', 'INV')}-{stub.number:04d}",
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": dict(tl.metadata), "subscription": tl.id},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": period[1],
        "period_start": period[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": finalized,
            "marked_uncollectible_at": record.closed_at if status == "uncollectible" else None,
            "paid_at": record.paid_at if paid else None,
            "voided_at": record.closed_at if status == "void" else None,
        },
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": None,
        "total": total,
        "total_discount_amounts": [{"amount": a, "discount": d} for d, a in totals.items()],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": point.t,
    }


def _line_object(store: "StripeStore", tl: Timeline, invoice: str, line: Line) -> dict:
    price = line.price
    product = store.get("products", price["product"]) or {}
    rec = price["recurring"]
    unit = price["unit_amount_decimal"] if price["billing_scheme"] == "per_unit" else None
    return {
        "id": stable_id("il", store.account_fragment, invoice, line.item_id),
        "object": "line_item",
        "amount": line.amount,
        "currency": tl.currency,
        "description": f"{line.quantity} × {product.get('name', 'Product')} "
                       f"(per {rec['interval_count']} {rec['interval']})"
                       if rec["interval_count"] > 1 else
                       f"{line.quantity} × {product.get('name', 'Product')} (per {rec['interval']})",
        "discount_amounts": line.discount_amounts,
        "discountable": True,
        "discounts": line.discounts,
        "invoice": invoice,
        "livemode": store.livemode,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": tl.id,
                "subscription_item": line.item_id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": line.period[1], "start": line.period[0]},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": unit,
        },
        "quantity": line.quantity,
        "subscription": tl.id,
        "subtotal": line.amount,
        "taxes": [],
    }


def invoice_lines(store: "StripeStore", stub: InvoiceStub) -> list[dict]:
    """Every line of an invoice (what `/v1/invoices/{id}/lines` pages through)."""
    tl = store.timelines[stub.subscription]
    lines, _ = compute_lines(store, tl, stub.record.point)
    return [_line_object(store, tl, stub.id, line) for line in lines]

