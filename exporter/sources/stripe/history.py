"""What subscriptions looked like in the past, from what Stripe keeps.

Two reconstructions, both pure functions:

- Within the last 30 days (Stripe's event retention): start from today's
  subscriptions and undo the `customer.subscription.*` events that happened
  after the moment asked for. Each event is parsed once, when it is listed
  (`settled`): the subscription after it and, for an update, before it, its
  object with `previous_attributes` put back. Each subscription's first
  event after the moment tells its state then; a `created` event means it
  did not exist yet. Events without `previous_attributes` (deleted, paused, resumed) do not
  say what came before: the subscription's last event at or before the moment
  does, when one is held; otherwise it was trialing if the moment falls
  within its trial, paused before a `resumed` event, and active before a
  deletion or a pause outside a trial.
- Further back: paid invoices. A subscription line of a paid invoice whose
  period covers the moment is what the customer was paying then, after
  discounts; prorations and metered usage are left out.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import ItemsView, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Callable, Iterable, Iterator

from exporter import money
from exporter.sources.stripe import parse
from exporter.sources.stripe.changelog import ChangeLog, span
from exporter.sources.stripe.dynamics import DAY, MrrBridge, mrr_bridge
from exporter.sources.stripe.invoice_lines import InvoiceLines
from exporter.sources.stripe.mrr import (
    MrrRules, RevenueKpis, customer_mrr, depends_on_time, monthly, mrr_totals,
)
from exporter.sources.stripe.records import (
    Coupon, InvoiceLine, Price, Subscription, SubscriptionChange,
)


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


CREATED = "customer.subscription.created"
UPDATED = "customer.subscription.updated"
DELETED = "customer.subscription.deleted"


def settled(event: dict, prices: dict[str, Price], coupons: dict[str, Coupon],
            known_discounts: parse.KnownDiscounts,
            shared: Callable[[Subscription], Subscription] = lambda sub: sub,
            items: parse.SharedItems | None = None) -> SubscriptionChange:
    """A slimmed subscription event (events.slim), parsed once: the subscription
    after it, and before it where the event says (an update, or previous_attributes).

    `shared` returns an equal record already held in place of a new one (most
    events are renewals: their subscription is today's), and `items` the items
    already made (parse.SharedItems). While the event names a price, coupon or
    discount not known yet, it stays `pending` (parsed again at the next poll,
    when more may be known)."""
    obj, previous = event["data"]["object"], event["data"].get("previous_attributes")
    puts_back = event["type"] == UPDATED or "previous_attributes" in event["data"]
    # The object before it, when the event puts anything back (a renewal's is empty).
    raws = [obj, put_back(obj, previous)] if puts_back and previous else [obj]

    def parse_one(raw: dict) -> Subscription:
        return shared(parse.parse_subscription(raw, prices, coupons,
                                               known_discounts=known_discounts, shared=items))

    after = parse_one(obj)
    before = None
    if puts_back:
        before = parse_one(raws[1]) if previous else after
    complete = all(parse.names_only_known(raw, prices, coupons, known_discounts)
                   for raw in raws)
    # after.id: the held record's string when it is shared, not one more copy per event
    return SubscriptionChange(event["id"], sys.intern(event["type"]), event["created"], after.id,
                              after=after, before=before, puts_back=puts_back,
                              pending=None if complete else event)


def changes_around(changes: ChangeLog, at: int) -> tuple[dict[str, int], dict[str, int]]:
    """Per subscription id: the row of its first change after `at`, and of its last
    at or before it, for those whose first change after does not put back what it
    was (the only ones _before asks: a day ago, a few of the month's subscriptions).

    `changes` come newest first, as Stripe lists events; among events of the same
    second the later one in that list is the earlier event.
    """
    cut, _ = span(changes.created, int, [at])  # the rows before it are after `at`
    first_after: dict[str, int] = {}
    for row in range(cut):
        first_after[changes.subscription[row]] = row  # each later match is older, so it wins
    asked = {sub_id for sub_id, row in first_after.items() if not changes.puts_back[row]}
    last_before: dict[str, int] = {}
    for row in range(cut, len(changes)) if asked else ():
        sub_id = changes.subscription[row]
        if sub_id in asked and sub_id not in last_before:
            last_before[sub_id] = row  # the first match is the newest
    return first_after, last_before


def subscriptions_at(current: list[Subscription], changes: ChangeLog,
                     at: int) -> list[Subscription]:
    """The subscriptions as they were at `at` (those that existed then).

    `current`: today's; `changes` must hold every subscription event after `at`,
    settled. Nothing is parsed here: a subscription no event changed since `at`
    is today's record, any other the record its first event after `at` holds.
    """
    return [then for _, then in _states_at(current, changes, at) if then is not None]


def _states_at(current: list[Subscription], changes: ChangeLog, at: int
               ) -> Iterator[tuple[Subscription | None, Subscription | None]]:
    """(today's record, its state at `at`) for every subscription, today's first and
    in their order: today's record None for one known only from events (e.g. listed
    before it was created), the state None for one that did not exist then."""
    first_after, last_before = changes_around(changes, at)
    for sub in current:
        row = first_after.pop(sub.id, None)
        if row is None:
            yield sub, (sub if sub.created <= at else None)
        else:
            yield sub, _before(changes, row, last_before.get(sub.id), at)
    for sub_id, row in first_after.items():
        yield None, _before(changes, row, last_before.get(sub_id), at)


def _before(changes: ChangeLog, row: int, earlier: int | None, at: int) -> Subscription | None:
    """The subscription at `at`, from the row of its first change after it (and of
    the last before)."""
    after, kind = changes.after[row], changes.type[row]
    if after is None:
        raise ValueError(f"event {changes.id[row]} was not settled")
    if kind == CREATED:
        return None
    if changes.puts_back[row]:
        return changes.before[row]
    if earlier is not None and changes.type[earlier] != DELETED:
        return changes.after[earlier]  # the state its last earlier event left
    if after.trial_end is not None and at < after.trial_end:
        status = "trialing"
    elif kind == "customer.subscription.resumed":
        status = "paused"
    else:  # deleted, or paused outside a trial
        status = "active"
    return replace(after, status=status,
                   ended_at=None if kind == DELETED else after.ended_at)


def billed_lines(lines: InvoiceLines, at: int,
                 ended: dict[str, int] | None = None) -> Iterator[InvoiceLine]:
    """The paid invoice lines that say what was billed at `at` (billed_rows), one
    record at a time."""
    return (lines.line(row) for row in billed_rows(lines, at, ended))


def billed_rows(lines: InvoiceLines, at: int, ended: dict[str, int] | None = None) -> list[int]:
    """The rows of the paid invoice lines that say what was billed at `at`:
    billed_lines_at's lines for that one step, in the same order, read from the
    columns (the cohort's half a million lines at a million subscriptions are
    never made records).

    Per subscription item only the line of the latest period starting by `at`
    counts (a plan change restarts the period; the old line still covers
    `at`). Prorations are left out, and so are subscriptions that had ended by
    `at` (`ended`: id -> ended_at).
    """
    ended = ended or {}
    first: dict[object, tuple[int, int]] = {}  # item -> (period start, row) of its first span
    billed: dict[object, int] = {}  # item -> the row of its covering line starting last
    for row, start in enumerate(lines.period_start):
        if start > at or lines.proration[row]:
            continue
        subscription, end = lines.subscription[row], lines.period_end[row]
        stop = min(end, ended.get(subscription or "", end))
        if start >= stop:
            continue
        item = lines.subscription_item[row]
        key = (subscription, item) if item else row
        if key not in first or start < first[key][0]:
            first[key] = (start, row)
        if stop > at and (key not in billed or start > lines.period_start[billed[key]]):
            billed[key] = row
    # billed_lines_at's order: the items by their first span (the sweep's order), sorted
    # a day of first spans at a time: one sort of every item (hundreds of thousands at
    # a million subscriptions) holds the interpreter lock, and every scrape, for a second
    by_day: dict[int, list] = defaultdict(list)
    for key in billed:
        by_day[first[key][0] // DAY].append(key)
    rows = []
    for day in sorted(by_day):
        rows += [billed[key] for key in sorted(by_day[day], key=first.__getitem__)]
    return rows


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


def customer_mrr_from_invoices(lines: InvoiceLines, at: int, prices: dict[str, Price],
                               fx_rates: dict[str, Decimal],
                               ended: dict[str, int] | None = None) -> dict[str, Decimal]:
    """Customer MRR at `at` (reporting currency) from the paid invoice lines covering
    it (`billed_lines`), each normalised to a month (`line_mrr`)."""
    return customer_mrr_billed(billed_lines(lines, at, ended), prices, fx_rates)


def customer_mrr_billed(billed: Iterable[InvoiceLine], prices: dict[str, Price],
                        fx_rates: dict[str, Decimal]) -> dict[str, Decimal]:
    """Each customer's MRR (reporting currency) from the lines billed at a moment;
    customers billed nothing convertible are absent. Equal amounts are one Decimal
    (most customers pay what many others pay; the 1y cohort's are held all day)."""
    result: dict[str, Decimal] = defaultdict(Decimal)
    for line in billed:
        amount = line_mrr(line, prices)
        converted = None if amount is None else money.to_reporting(amount, line.currency, fx_rates)
        if converted:
            result[line.customer] += converted
    amounts: dict[Decimal, Decimal] = {}
    return {customer: amounts.setdefault(amount, amount) for customer, amount in result.items()}


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
    billed", for moments before the events: see the README), by mrr.mrr_totals;
    statuses and failed payments are not known."""
    monthly_lines = ((line, line_mrr(line, prices)) for line in lines)
    return mrr_totals(((line.customer, line.currency, amount) for line, amount in monthly_lines
                       if amount is not None), fx_rates)


def customer_mrr_at(current: list[Subscription], changes: ChangeLog, at: int, *,
                    now_mrr: Mapping[str, Decimal], fx_rates: dict[str, Decimal],
                    rules: MrrRules) -> PastMrr:
    """Each customer's MRR at `at` (within the event retention), valued by the same
    rules as today's, with today's fx rates; `now_mrr` is customer_mrr of `current`
    today, with those rates and rules.

    A customer none of whose subscriptions is otherwise at `at` than today (no event
    since then left it another record, none was created since, none has a discount
    that ends, whose value depends on the moment) had today's MRR then: only the
    others are valued anew. Most of a month's events are renewals, which change
    nothing valued, and a dict of every customer's MRR is some 40 MiB a moment at a
    million subscriptions."""
    states, touched = [], set()
    for today, then in _states_at(current, changes, at):
        if then is None:
            if today is not None:  # created since
                touched.add(today.customer)
            continue
        states.append(then)
        if today is None or (then is not today and then != today) or depends_on_time(then):
            touched.add(then.customer)
    then_mrr = customer_mrr((s for s in states if s.customer in touched), at, fx_rates, rules)
    return PastMrr(now_mrr, then_mrr, touched)


class PastMrr(Mapping[str, Decimal]):
    """Customer MRR at a past moment (customer_mrr_at), read as the dict customer_mrr
    would make of that moment's subscriptions: today's MRR `now`, but for the
    `touched` customers, whose MRR then is in `then` (absent: zero)."""

    def __init__(self, now: Mapping[str, Decimal], then: dict[str, Decimal], touched: set[str]):
        self._now, self._then, self._touched = now, then, touched
        self._len = len(now) - sum(1 for customer in touched if customer in now) + len(then)

    def __getitem__(self, customer: str) -> Decimal:
        return (self._then if customer in self._touched else self._now)[customer]

    def get(self, customer: str, default: Decimal | None = None) -> Decimal | None:
        return (self._then if customer in self._touched else self._now).get(customer, default)

    def __contains__(self, customer: object) -> bool:
        return customer in (self._then if customer in self._touched else self._now)

    def __iter__(self) -> Iterator[str]:
        return (customer for customer, _ in self.items())

    def __len__(self) -> int:
        return self._len

    @property
    def touched(self) -> frozenset[str]:
        """The customers valued anew."""
        return frozenset(self._touched)

    def items(self) -> _PastItems:
        return _PastItems(self)


class _PastItems(ItemsView):
    def __iter__(self) -> Iterator[tuple[str, Decimal]]:
        past = self._mapping
        touched = past._touched
        for customer, amount in past._now.items():
            if customer not in touched:
                yield customer, amount
        yield from past._then.items()


@dataclass(frozen=True)
class PaidBefore:
    """The customers who had paid before `moment` (mrr_bridge's reactivations), looked
    up in first_paid's answer: a set per step would hold every customer every step."""

    first_paid: dict[str, int]
    moment: int

    def __contains__(self, customer: str) -> bool:
        return self.first_paid.get(customer, self.moment) < self.moment


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
            result[at] = BilledStep(billed, mrr_bridge(customers[start], customers[at],
                                                       PaidBefore(paid_since, start)))
        for old in [t for t in customers if t < at - window]:
            del customers[old]  # no later step's window starts there
    return result
