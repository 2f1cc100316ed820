"""What subscriptions looked like in the past, from what Stripe keeps.

Two reconstructions, both pure functions:

- Within the last 30 days (Stripe's event retention): start from today's
  subscription objects and undo the `customer.subscription.*` events that
  happened after the moment asked for. Each subscription's first event after
  that moment tells its state then: an event with `previous_attributes` is
  its object with them put back; a `created` event means it did not exist
  yet. Events without `previous_attributes` (deleted, paused, resumed) do not
  say what came before: the subscription's last event at or before the moment
  does, when one is held; otherwise it was trialing if the moment falls
  within its trial, paused before a `resumed` event, and active before a
  deletion or a pause outside a trial.
- Further back: paid invoices. A subscription line of a paid invoice whose
  period covers the moment is what the customer was paying then, after
  discounts; prorations and metered usage are left out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterator

from exporter import money
from exporter.sources.stripe import parse
from exporter.sources.stripe.dynamics import MrrBridge, mrr_bridge
from exporter.sources.stripe.mrr import ZERO, MrrRules, RevenueKpis, customer_mrr, monthly
from exporter.sources.stripe.records import Coupon, InvoiceLine, Price, Subscription


def put_back(obj: dict, previous: dict) -> dict:
    """The object before an update: `previous_attributes` merged over it.

    Nested hashes hold only their changed keys; lists and values are whole.
    The result shares unchanged parts with `obj` (copying whole subscriptions
    was most of a poll's time); neither is modified afterwards.
    """
    before = dict(obj)
    for key, old in previous.items():
        if isinstance(old, dict) and isinstance(before.get(key), dict):
            before[key] = put_back(before[key], old)
        else:
            before[key] = old
    return before


def events_around(events: list[dict], at: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per subscription id: its first event after `at`, and its last at or before it.

    `events` come newest first, as Stripe lists them; among events of the same
    second the later one in that list is the earlier event.
    """
    first_after: dict[str, dict] = {}
    last_before: dict[str, dict] = {}
    for event in events:  # newest first
        sub_id = event["data"]["object"]["id"]
        if event["created"] > at:
            first_after[sub_id] = event  # each later match is older, so it wins
        else:
            last_before.setdefault(sub_id, event)  # the first match is the newest
    return first_after, last_before


def subscriptions_at(current: list[dict], events: list[dict], at: int,
                     cache: "PastCache | None" = None) -> list[dict]:
    """Raw subscription objects as they were at `at` (those that existed then).

    `events` must hold every subscription event after `at`. With a `cache`, the
    object rebuilt from the same events is the same object from poll to poll.
    """
    before_of = cache.before if cache is not None else _before
    first_after, last_before = events_around(events, at)
    result = []
    seen = set()
    for sub in current:
        seen.add(sub["id"])
        event = first_after.get(sub["id"])
        if event is None:
            if sub.get("created", 0) <= at:
                result.append(sub)
            continue
        before = before_of(event, last_before.get(sub["id"]), at)
        if before is not None:
            result.append(before)
    # Subscriptions only known from events (e.g. listed before they were created).
    for sub_id, event in first_after.items():
        if sub_id not in seen:
            before = before_of(event, last_before.get(sub_id), at)
            if before is not None:
                result.append(before)
    return result


class PastCache:
    """What rebuilding past moments made, kept from one poll to the next: each
    subscription's object before an event (the same events give the same object)
    and each object's parsed record. A poll's steady work is then the few
    subscriptions that changed, not every one the month of events names.

    The kept events are the same objects from poll to poll, and so are the ones
    this keys on (they are kept in the entries). Parsed records depend on the
    prices, coupons and known discounts too: any change to those (a full sync
    lists new ones) starts the cache afresh. What a poll did not use is
    forgotten at the next.
    """

    def __init__(self) -> None:
        self._inputs: tuple = (None, None, {})  # prices, coupons, known discounts (copied)
        self._before: dict[tuple, tuple] = {}
        self._parsed: dict[int, tuple[dict, Subscription]] = {}
        self._older: tuple[dict, dict] = ({}, {})

    def next_poll(self, prices: dict, coupons: dict, known_discounts: dict) -> None:
        kept_prices, kept_coupons, kept_discounts = self._inputs
        same = (prices is kept_prices and coupons is kept_coupons
                and kept_discounts.keys() == known_discounts.keys()
                and all(known_discounts[key] is obj for key, obj in kept_discounts.items()))
        self._older = (self._before, self._parsed) if same else ({}, {})
        self._inputs = (prices, coupons, dict(known_discounts))
        self._before, self._parsed = {}, {}

    def before(self, event: dict, earlier: dict | None, at: int) -> dict | None:
        trial_end = event["data"]["object"].get("trial_end")
        key = (id(event), id(earlier), trial_end is not None and at < trial_end)
        entry = self._before.get(key) or self._older[0].get(key)
        if entry is None or entry[0] is not event or entry[1] is not earlier:
            entry = (event, earlier, _before(event, earlier, at))
        self._before[key] = entry
        return entry[2]

    def parsed(self, raw: dict, parse_one: Callable[[dict], Subscription]) -> Subscription:
        entry = self._parsed.get(id(raw)) or self._older[1].get(id(raw))
        if entry is None or entry[0] is not raw:
            entry = (raw, parse_one(raw))
        self._parsed[id(raw)] = entry
        return entry[1]


def _before(event: dict, earlier: dict | None, at: int) -> dict | None:
    """The subscription at `at`, from its first event after it (and the last before)."""
    kind, obj = event["type"], event["data"]["object"]
    if kind == "customer.subscription.created":
        return None
    if kind == "customer.subscription.updated" or "previous_attributes" in event["data"]:
        return put_back(obj, event["data"].get("previous_attributes") or {})
    if earlier is not None and earlier["type"] != "customer.subscription.deleted":
        return earlier["data"]["object"]  # the state its last earlier event left
    before = dict(obj)  # shallow: only top-level keys change below
    trial_end = obj.get("trial_end")
    if trial_end is not None and at < trial_end:
        before["status"] = "trialing"
    elif kind == "customer.subscription.resumed":
        before["status"] = "paused"
    else:  # deleted, or paused outside a trial
        before["status"] = "active"
    if kind == "customer.subscription.deleted":
        before["ended_at"] = None
        before["canceled_at"] = None
    return before


def billed_lines(lines: list[InvoiceLine], at: int,
                 ended: dict[str, int] | None = None) -> list[InvoiceLine]:
    """The paid invoice lines that say what was billed at `at`.

    Per subscription item only the line of the latest period starting by `at`
    counts (a plan change restarts the period; the old line still covers
    `at`). Prorations are left out, and so are subscriptions that had ended by
    `at` (`ended`: id -> ended_at).
    """
    return next(billed_lines_at(lines, [at], ended))[1]


def billed_lines_at(lines: list[InvoiceLine], steps: list[int],
                    ended: dict[str, int] | None = None) -> Iterator[tuple[int, list[InvoiceLine]]]:
    """`billed_lines` at every step, in time order, from one sweep over the lines:
    each step looks at the lines covering it only, and nothing is held per step."""
    ended = ended or {}
    spans = []  # (first moment, first moment after, line)
    for line in lines:
        stop = min(line.period_end, ended.get(line.subscription or "", line.period_end))
        if not line.proration and line.period_start < stop:
            spans.append((line.period_start, stop, line))
    spans.sort(key=lambda span: span[0])
    covering: dict[tuple, list[tuple[int, InvoiceLine]]] = {}  # item -> (stop, line)
    taken = 0
    for at in sorted(set(steps)):
        while taken < len(spans) and spans[taken][0] <= at:
            _, stop, line = spans[taken]
            taken += 1
            key = (line.subscription, line.subscription_item) if line.subscription_item \
                else (id(line),)
            covering.setdefault(key, []).append((stop, line))
        billed = []
        for key in list(covering):
            still = [(stop, line) for stop, line in covering[key] if stop > at]
            if not still:
                del covering[key]
                continue
            covering[key] = still
            billed.append(max(still, key=lambda held: held[1].period_start)[1])
        yield at, billed


def line_mrr(line: InvoiceLine, prices: dict[str, Price]) -> Decimal | None:
    """A billed line as an amount a month (minor units of its currency); None for
    metered usage, which is not recurring revenue. By its price's interval; when the
    price is unknown (deleted), by the length of the line's period."""
    price = prices.get(line.price_id or "")
    if price is None:
        seconds = max(line.period_end - line.period_start, 1)
        return line.amount * Decimal(365 * 86400) / 12 / seconds
    if price.usage_type != "licensed":
        return None
    return monthly(line.amount, price.interval, price.interval_count)


def customer_mrr_from_invoices(lines: list[InvoiceLine], at: int, prices: dict[str, Price],
                               fx_rates: dict[str, Decimal],
                               ended: dict[str, int] | None = None) -> dict[str, Decimal]:
    """Customer MRR at `at` (reporting currency) from the paid invoice lines covering
    it (`billed_lines`), each normalised to a month (`line_mrr`)."""
    return customer_mrr_billed(billed_lines(lines, at, ended), prices, fx_rates)


def customer_mrr_billed(billed: list[InvoiceLine], prices: dict[str, Price],
                        fx_rates: dict[str, Decimal]) -> dict[str, Decimal]:
    """Each customer's MRR (reporting currency) from the lines billed at a moment;
    customers billed nothing convertible are absent."""
    result: dict[str, Decimal] = defaultdict(Decimal)
    for line in billed:
        amount = line_mrr(line, prices)
        converted = None if amount is None else money.to_reporting(amount, line.currency, fx_rates)
        if converted:
            result[line.customer] += converted
    return dict(result)


def first_paid(lines: list[InvoiceLine], prices: dict[str, Price]) -> dict[str, int]:
    """Customer -> the start of the first period a paid line billed them above zero
    for (among `lines`): who had paid before a moment, for reactivations."""
    result: dict[str, int] = {}
    for line in lines:
        if not line.proration and line.amount > 0 and line_mrr(line, prices) is not None:
            result[line.customer] = min(result.get(line.customer, line.period_start),
                                        line.period_start)
    return result


def billed_kpis(lines: list[InvoiceLine], prices: dict[str, Price],
                fx_rates: dict[str, Decimal]) -> RevenueKpis:
    """MRR, MRR by currency, paying customers and ARPA from billed lines ("MRR
    billed", for moments before the events: see the README). A customer pays when
    a line bills them more than zero; statuses and failed payments are not known."""
    by_currency: dict[str, Decimal] = {}
    paying: set[str] = set()
    paying_converted: set[str] = set()
    missing_fx: Counter[str] = Counter()
    for line in lines:
        amount = line_mrr(line, prices)
        if amount is None:
            continue
        major = money.to_major(amount, line.currency)
        by_currency[line.currency] = by_currency.get(line.currency, ZERO) + major
        if line.currency not in fx_rates:
            missing_fx[line.currency] += 1
        if major > 0:
            paying.add(line.customer)
            if line.currency in fx_rates:
                paying_converted.add(line.customer)
    mrr = sum((money.convert(amount, currency, fx_rates) for currency, amount in by_currency.items()
               if currency in fx_rates), ZERO)
    return RevenueKpis(mrr=mrr, mrr_by_currency=by_currency, subscriptions_by_status={},
                       paying_customers=len(paying), paying_customers_converted=len(paying_converted),
                       failed_payments=0, failed_payments_amount=ZERO, missing_fx=dict(missing_fx))


def subscriptions_parsed_at(current: list[dict], events: list[dict], at: int, *,
                            prices: dict[str, Price], coupons: dict[str, Coupon],
                            known_discounts: dict[str, dict],
                            parsed: list[Subscription] | None = None,
                            cache: PastCache | None = None) -> list[Subscription]:
    """The subscriptions as they were at `at` (within the event retention), parsed.

    `parsed`: today's subscriptions already parsed, in the order of `current`; a
    subscription no event changed since `at` is then not parsed again (most are).
    `cache`: what the last polls rebuilt and parsed (the caller calls its
    next_poll with these prices, coupons and known discounts first)."""
    reuse = ({id(raw): sub for raw, sub in zip(current, parsed, strict=True)}
             if parsed is not None else {})

    def parse_one(raw: dict) -> Subscription:
        return parse.parse_subscription(raw, prices, coupons, known_discounts=known_discounts)

    return [reuse.get(id(raw)) or (cache.parsed(raw, parse_one) if cache else parse_one(raw))
            for raw in subscriptions_at(current, events, at, cache)]


def customer_mrr_at(current: list[dict], events: list[dict], at: int, *,
                    prices: dict[str, Price], coupons: dict[str, Coupon],
                    known_discounts: dict[str, dict], fx_rates: dict[str, Decimal],
                    rules: MrrRules,
                    parsed: list[Subscription] | None = None,
                    cache: PastCache | None = None, mrr_of=None) -> dict[str, Decimal]:
    """Each customer's MRR at `at` (within the event retention), valued by the same
    rules as today's, with today's prices for tiers and today's fx rates
    (`cache`: see subscriptions_parsed_at; `mrr_of`: see mrr.customer_mrr)."""
    return customer_mrr(subscriptions_parsed_at(current, events, at, prices=prices,
                                                coupons=coupons, known_discounts=known_discounts,
                                                parsed=parsed, cache=cache),
                        at, fx_rates, rules, mrr_of)


@dataclass(frozen=True)
class BilledStep:
    """A past moment as the paid invoices tell it (the backfill before the events)."""

    lines: list[InvoiceLine]  # billed then (billed_lines)
    bridge: MrrBridge  # MRR billed over the window ending then


def billed_steps(lines: list[InvoiceLine], steps: list[int], window: int,
                 prices: dict[str, Price], fx_rates: dict[str, Decimal],
                 ended: dict[str, int] | None = None) -> dict[int, BilledStep]:
    """Per step: the lines billed then, and the bridge of customer MRR billed from
    `window` before it to it. A customer billed nothing at the start is a
    reactivation when `lines` show them paying before it, else new (so `lines`
    should reach back well before the first window)."""
    wanted = set(steps)
    paid_since = first_paid(lines, prices)
    customers: dict[int, dict[str, Decimal]] = {}
    result = {}
    for at, billed in billed_lines_at(lines, sorted(wanted | {at - window for at in wanted}),
                                      ended):
        customers[at] = customer_mrr_billed(billed, prices, fx_rates)
        if at in wanted:
            start = at - window
            paid_before = {c for c, first in paid_since.items() if first < start}
            result[at] = BilledStep(billed, mrr_bridge(customers[start], customers[at],
                                                       paid_before))
        for old in [t for t in customers if t < at - window]:
            del customers[old]  # no later step's window starts there
    return result
