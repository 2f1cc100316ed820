"""The Stripe source: its config, one poll, and the samples it exports.

A poll fetches today's state (fetch.py), brings the event log up to date
(events.py), rebuilds customer MRR in the past (history.py) and turns it all
into KPIs with the pure functions of mrr.py and dynamics.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import ChainMap
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Callable, Iterator, Mapping

from exporter import labels, money
from exporter.config import PollLimits, Section
from exporter.http import HttpClient
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, http_client, Registration, Sample
from exporter.sources.stripe import cohort, dynamics, fetch, held, history, parse
from exporter.sources.stripe.events import OVERLAP, RETENTION, EventLog
from exporter.sources.stripe.mrr import (
    FAILED_PAYMENTS_WINDOW, MrrRules, RevenueKpis, customer_mrr, revenue_kpis,
)
from exporter.sources.stripe.records import SubscriptionChange
from exporter.sources.stripe.window import ChangeFeed, TrailingWindow

log = logging.getLogger(__name__)

NAME = "stripe"
STRIPE_VERSION = "2026-07-29.dahlia"
DAY = 86400
WINDOW = 30 * DAY  # the trailing window of the dynamics KPIs ("30d")
YEAR = 365 * DAY  # the one-year retention cohort ("1y")
DISPUTE_LOOKBACK = 180 * DAY  # card networks close disputes within months
# The month of events and the 1y cohort's year of invoices are history: on a
# large account more pages than one poll should take, so each poll reads at
# most this many requests' worth of them, counting what it asked before (a
# first poll's subscriptions, so that it is those and a few more pages). The
# series that need them are absent until they are read. 40 s at 25 requests a second.
HISTORY_PAGES_PER_POLL = 1000
# A refund in these states no longer changes (a succeeded one failing later is
# rare; the full sync's re-list catches it).
SETTLED_REFUNDS = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class StripeConfig:
    api_key: Secret
    base_url: str = "https://api.stripe.com"
    poll_interval: float = 300.0
    limits: PollLimits = PollLimits(50_000, 3600.0)  # a million subscriptions: 10,000 pages and the invoices
    rate_limit: float = 25.0  # requests per second; Stripe allows 100 live, 25 in test mode
    timeout: float = 30.0
    # A re-list of every subscription, however few the events say changed (held.py).
    full_sync_interval: float = held.FULL_SYNC_INTERVAL
    mrr: MrrRules = field(default_factory=MrrRules)
    # Share of revenue kept after the cost of serving it, for lifetime value.
    gross_margin: Decimal = Decimal("0.80")


def parse_config(section: Section) -> StripeConfig:
    mrr = section.section("mrr")
    rules = MrrRules(
        include_past_due=mrr.boolean("include_past_due", True),
        include_cancel_at_period_end=mrr.boolean("include_cancel_at_period_end", True),
        apply_once_discounts=mrr.boolean("apply_once_discounts", False),
    )
    mrr.finish()
    return StripeConfig(
        api_key=section.secret("api_key"),
        base_url=section.url("base_url", StripeConfig.base_url),
        **section.common(StripeConfig),
        full_sync_interval=section.duration("full_sync_interval", StripeConfig.full_sync_interval),
        mrr=rules,
        gross_margin=Decimal(str(section.convert("gross_margin", StripeConfig.gross_margin,
                                                 _fraction))),
    )


# What Stripe documents a subscription's status can be; `kpi_subscriptions{status}`.
SUBSCRIPTION_STATUSES = frozenset({"incomplete", "incomplete_expired", "trialing", "active",
                                   "past_due", "canceled", "unpaid", "paused"})
MAX_CURRENCIES = 40  # currency label values a source exports
# What a past moment's subscriptions give (backfill; its failed payments would come
# from its charges, not rebuilt yet). The 30-day bridge comes from invoices.
BACKFILLED = frozenset({"mrr", "paying_customers", "arpa", "mrr_by_currency", "subscriptions"})
# What paid invoices give before the events (statuses are not on them).
BILLED = BACKFILLED - {"subscriptions"}


def ended(data: fetch.StripeData) -> dict[str, int]:
    """Subscription id -> when it ended, for those that did."""
    return {s.id: s.ended_at for s in data.subscriptions if s.ended_at is not None}


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError("must be a number above 0 and at most 1 (0.8 for 80 %)")
    return value


def _sample(kpi: str, value: Any, **labels: str) -> Sample:
    return Sample(kpi, {"source": NAME, **labels}, float(value))


def samples(kpis: RevenueKpis) -> list[Sample]:
    """Today's revenue series. Labels besides `source` are per metric."""
    result = [
        _sample("mrr", kpis.mrr),
        _sample("paying_customers", kpis.paying_customers),
        _sample("failed_payments", kpis.failed_payments, window="24h"),
        _sample("failed_payments_amount", kpis.failed_payments_amount, window="24h"),
    ]
    if kpis.arpa is not None:
        result.append(_sample("arpa", kpis.arpa))
    result += [_sample("mrr_by_currency", amount, currency=currency)
               for currency, amount in sorted(kpis.mrr_by_currency.items())]
    result += [_sample("subscriptions", count, status=status)
               for status, count in sorted(kpis.subscriptions_by_status.items())]
    result += [_sample("unconverted_objects", count, currency=currency)
               for currency, count in sorted(kpis.missing_fx.items())]
    return result


def bridge_samples(bridge: dynamics.MrrBridge) -> list[Sample]:
    """The 30-day bridge's series (movements, churn, retention); a ratio with a zero
    denominator has no series."""
    month = "30d"
    result = [_sample("mrr_movement", bridge.movements[m], movement=m, window=month)
              for m in dynamics.MOVEMENTS]
    result += [
        _sample("mrr_window_start", bridge.start, window=month),
        _sample("customers_churned", bridge.customers["churn"], window=month),
        _sample("paying_customers_window_start", bridge.paying_at_start, window=month),
        _sample("nrr_cohort_mrr_start", bridge.start, window=month),
        _sample("nrr_cohort_mrr_now", bridge.retained, window=month),
    ]
    optional = [
        ("mrr_growth_rate", bridge.growth_rate),
        ("customer_churn_rate", bridge.customer_churn_rate),
        ("gross_revenue_churn_rate", bridge.gross_revenue_churn_rate),
        ("net_revenue_churn_rate", bridge.net_revenue_churn_rate),
        ("net_revenue_retention", bridge.net_revenue_retention),
    ]
    return result + [_sample(kpi, value, window=month) for kpi, value in optional
                     if value is not None]


def dynamics_samples(d: dynamics.RevenueDynamics) -> list[Sample]:
    """The revenue-dynamics series; a ratio with a zero denominator has no series."""
    month, year = "30d", "1y"
    result = [] if d.bridge is None else bridge_samples(d.bridge)  # None: events being read
    if d.cohort_start is not None:  # None while its invoices are being read
        result += [_sample("nrr_cohort_mrr_start", d.cohort_start, window=year),
                   _sample("nrr_cohort_mrr_now", d.cohort_now, window=year)]
    result += [
        _sample("trials_active", d.trials.active),
        _sample("trials_started", d.trials.started, window=month),
        _sample("trials_ended", d.trials.ended, window=month),
        _sample("trials_converted", d.trials.converted, window=month),
        _sample("refunds_amount", d.refunds_amount, window=month),
        _sample("disputes_open", d.disputes_open),
        _sample("disputes_open_amount", d.disputes_open_amount),
    ]
    optional = [
        ("mrr_growth_rate", d.annual_growth_rate, {"window": year}),
        ("net_revenue_retention", d.annual_retention, {"window": year}),
        ("trial_conversion_rate", d.trials.conversion_rate, {"window": month}),
        ("customer_lifetime_value", d.lifetime_value, {}),
        ("largest_churn_arr", d.largest_churn_arr, {"window": "24h"}),
    ]
    result += [_sample(kpi, value, **labels) for kpi, value, labels in optional
               if value is not None]
    return result


def make_client(source_config: StripeConfig, **overrides: Any) -> HttpClient:
    """The HTTP client for Stripe; tests override e.g. `sleep`."""
    return http_client(NAME, source_config, headers={
        "Authorization": f"Bearer {source_config.api_key.reveal()}",
        "Stripe-Version": STRIPE_VERSION,
    }, **overrides)


class StripeSource(HttpSource):
    name = NAME

    def __init__(self, source_config: StripeConfig, fx_rates: dict, *,
                 clock: Callable[[], float] = time.time, client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.fx_rates = fx_rates
        self.clock = clock
        self.client = client or make_client(source_config)
        self.events = EventLog()
        self.held = held.HeldSubscriptions(source_config.full_sync_interval)
        # The trailing windows, listed incrementally; what changed in them, from events.
        self.changes = ChangeFeed()
        self.charges = TrailingWindow(fetch.charges, lambda c: c.status != "pending",
                                      fetch.charge)
        self.refunds = TrailingWindow(fetch.refunds, lambda r: r.status in SETTLED_REFUNDS,
                                      fetch.refund)
        self.disputes = TrailingWindow(
            fetch.disputes, lambda d: d.status not in dynamics.OPEN_DISPUTE_STATUSES,
            fetch.dispute)
        # The discount events' discount objects by id, while an event still to be
        # parsed may name them (events name discounts by id only).
        self._event_discounts: dict[str, dict] = {}
        self._cohort: tuple[int, dict[str, Decimal]] | None = None  # (day, MRR a year before)
        self.cohort_lines = cohort.CohortLines()  # its invoices, read a day at a time
        self.history_pages: int | None = HISTORY_PAGES_PER_POLL  # None: all in one poll
        self._asked_before = 0  # the client's request count when this poll began
        self._paid_trials: set[str] = set()  # trials known to have paid after they ended
        # Trials that had not paid when asked: asked again once the subscription changes
        # (paying a past-due invoice does: it becomes active) or at the next full sync.
        self._unpaid_trials: set[str] = set()
        self._warned_currencies: set[str] = set()

    def poll(self) -> list[Sample]:
        return self.poll_at(int(self.clock()))

    def poll_at(self, now: int) -> list[Sample]:
        list_all = partial(fetch.list_all, self.client)
        self._asked_before = self.client.stats.snapshot()["requests"]
        # Events first: whatever changes while the subscriptions are read is in the
        # next ones. On the first poll a month of them is listed after the
        # subscriptions instead, each parsed as it comes (held as JSON until the
        # prices are known, they would be most of the memory); only the ids of the
        # last few minutes' are asked first, to tell what changed during the listing.
        full_syncs = self.held.synced_at
        first = full_syncs is None
        seen = self.events.ids_since(list_all, now - OVERLAP) if first else frozenset()
        self.held.update(self.client, () if first else self.events.refresh(list_all, now), now)
        if self.held.synced_at != full_syncs:
            self._full_synced()
        if first or self.held.lists_changed:
            if not first:  # the events were parsed with a price or coupon that changed or is gone
                log.info("stripe: prices or coupons changed; listing the events again")
            # What changed while the subscriptions were listed is re-read at the next
            # poll, as if the next refresh had named it.
            self.held.pend(self.events.refresh(
                list_all, now, relist=not first, parse=self._parser(),
                named_since=now - OVERLAP if first else None, seen=seen,
                max_pages=self._history_pages()))
        self.events.read_back(list_all, now, self._history_pages(), self._parser())
        self._unpaid_trials -= self.held.reread
        changed = self.changes.changed(self.client, now)
        for window in self._windows():
            window.note_changes(changed)
        data = self.held.data(self.charges.update(self.client, now - FAILED_PAYMENTS_WINDOW, now))
        self._remember_discounts()
        self.events.settle(self._parser())
        kpis = revenue_kpis(data.subscriptions, data.charges, now=now,
                            fx_rates=self.fx_rates, rules=self.config.mrr)
        self._warn_missing_rates(kpis)
        return samples(self._bounded(kpis)) + dynamics_samples(self._dynamics(data, kpis, now))

    def _history_pages(self) -> int | None:
        """How many more pages of history this poll may read (HISTORY_PAGES_PER_POLL)."""
        if self.history_pages is None:
            return None
        asked = self.client.stats.snapshot()["requests"] - self._asked_before
        return max(0, self.history_pages - asked)

    def _full_synced(self) -> None:
        """After a full sync the windows, too, are listed whole."""
        for window in self._windows():
            window.forget()
        self._unpaid_trials.clear()

    def _windows(self) -> tuple[TrailingWindow, ...]:
        return self.charges, self.refunds, self.disputes

    def _parser(self) -> Callable[[dict], SubscriptionChange]:
        """Parses subscription events with what is known now (history.settled), one
        listing of them a parser."""
        return partial(history.settled, prices=self.held.prices, coupons=self.held.coupons,
                       known_discounts=self.known_discounts, shared=self.held.sharing(),
                       items=self.held.items)

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """The revenue KPIs at each past step; the last step is a poll. See backfill.py.

        Within the 30 days of events Stripe keeps, the subscriptions are rebuilt
        from today's state and the events, and valued by the same rules as a
        poll's. Before them, MRR, MRR by currency, paying customers and ARPA are
        "MRR billed": the paid invoice lines covering each step (history.billed_kpis).
        The 30-day bridge (movements, churn, retention) ending at every past step
        is that of MRR billed at both ends. One pass over the invoices serves all."""
        now = steps[-1]
        pages, self.history_pages = self.history_pages, None  # a backfill waits for history
        try:
            last = self.poll_at(now)  # today's state and the events the past is rebuilt from
        finally:
            self.history_pages = pages
        data = self.held.data([])
        past = steps[:-1]
        billed = self._billed(data, past)
        for at in past:
            if at < now - RETENTION:
                kpis = history.billed_kpis(billed[at].lines, data.prices, self.fx_rates)
                revenue = [s for s in samples(self._bounded(kpis)) if s.kpi in BILLED]
            else:
                subscriptions = history.subscriptions_at(data.subscriptions,
                                                         self.events.changes(), at)
                kpis = revenue_kpis(subscriptions, [], now=at, fx_rates=self.fx_rates,
                                    rules=self.config.mrr)
                revenue = [s for s in samples(self._bounded(kpis)) if s.kpi in BACKFILLED]
            yield at, revenue + bridge_samples(billed[at].bridge)
        yield now, last

    def _billed(self, data: fetch.StripeData, past: list[int]) -> dict[int, history.BilledStep]:
        """Per past step, what the paid invoices say (history.billed_steps), from one
        read of the invoices covering the steps and the 30 days before each."""
        if not past:
            return {}
        first, last = past[0] - WINDOW, past[-1]
        lines = fetch.paid_invoice_lines(self.client, first, last)
        return history.billed_steps(lines, past, WINDOW, data.prices, self.fx_rates, ended(data))

    def _bounded(self, kpis: RevenueKpis) -> RevenueKpis:
        """Upstream-controlled label values kept to a known, small set: statuses Stripe
        documents (any other under "other", logged once), at most MAX_CURRENCIES
        currencies (the largest MRR; the rest are in kpi_mrr but get no series of their own)."""
        statuses: dict[str, int] = {}
        for status, count in kpis.subscriptions_by_status.items():
            if status not in SUBSCRIPTION_STATUSES:
                # Once, not once per value: an upstream inventing values must not flood the log.
                self.warn_once("status", "stripe: subscriptions of status %r, which Stripe does "
                               "not document, are counted under \"other\" (so are any other "
                               "such statuses, without a word more)", status)
                status = labels.OTHER
            statuses[status] = statuses.get(status, 0) + count
        ranked = sorted(kpis.mrr_by_currency.items(), key=lambda item: (
            -(money.to_reporting(item[1], item[0], self.fx_rates) or 0), item[0]))
        kept = dict(ranked[:MAX_CURRENCIES])
        if len(ranked) > MAX_CURRENCIES:
            self.warn_once("currencies", "stripe: more than %d billing currencies: the ones "
                           "with the least MRR (%s first) have no kpi_mrr_by_currency series",
                           MAX_CURRENCIES, ranked[MAX_CURRENCIES][0])
        missing = labels.fold(kpis.missing_fx, labels.top(kpis.missing_fx, MAX_CURRENCIES), 0,
                              lambda a, b: a + b, labels.OTHER)
        return dataclasses.replace(kpis, subscriptions_by_status=statuses, mrr_by_currency=kept,
                                   missing_fx=missing)

    def _dynamics(self, data: fetch.StripeData, kpis: RevenueKpis, now: int) -> dynamics.RevenueDynamics:
        now_mrr = customer_mrr(data.subscriptions, now, self.fx_rates, self.config.mrr)

        def mrr_at(at: int) -> Mapping[str, Decimal] | None:
            if not self.events.complete:  # the month of events is still being read
                return None
            return history.customer_mrr_at(data.subscriptions, self.events.changes(), at,
                                           now_mrr=now_mrr, fx_rates=self.fx_rates,
                                           rules=self.config.mrr)

        window_start_mrr = mrr_at(now - WINDOW)
        return dynamics.revenue_dynamics(
            now_mrr=now_mrr,
            window_start_mrr=window_start_mrr,
            day_ago_mrr=mrr_at(now - DAY),
            year_ago_mrr=self._year_ago_mrr(data, now),
            paid_before=set() if window_start_mrr is None else dynamics.had_paid_before(
                data.subscriptions, now - WINDOW, self.config.mrr,
                among=dynamics.new_payers(window_start_mrr, now_mrr)),
            paid_after_trial=self._paid_after_trial(data, now),
            subscriptions=data.subscriptions,
            refunds=self.refunds.update(self.client, now - WINDOW, now),
            disputes=self.disputes.update(self.client, now - DISPUTE_LOOKBACK, now),
            arpa=kpis.arpa, gross_margin=self.config.gross_margin,
            fx_rates=self.fx_rates, now=now, window=WINDOW,
        )

    def _paid_after_trial(self, data: fetch.StripeData, now: int) -> set[str]:
        """Ended trials that paid an invoice, asked of Stripe only where the status
        leaves it open; a yes never changes, so it is remembered, and so is a no
        until the subscription changes."""
        ended = dynamics.trials_ended_in(data.subscriptions, now, WINDOW)
        in_window = {sub.id for sub in ended}
        self._paid_trials &= in_window  # forget trials out of the window
        self._unpaid_trials &= in_window
        for sub in ended:
            if (sub.id not in self._paid_trials and sub.id not in self._unpaid_trials
                    and dynamics.needs_payment_check(sub)):
                paid = fetch.paid_since(self.client, sub.id, sub.trial_end)
                (self._paid_trials if paid else self._unpaid_trials).add(sub.id)
        return self._paid_trials

    @property
    def known_discounts(self) -> parse.KnownDiscounts:
        """Every discount an event may name that is known: the held subscriptions'
        (parsed), else a discount event's object."""
        return ChainMap(self.held.discounts, self._event_discounts)  # type: ignore[arg-type]

    def _remember_discounts(self) -> None:
        """Keep the discount events' objects that the events still to be parsed may
        name, and only those (a parsed event holds the discounts it named)."""
        for event in self.events.discount_events():
            self._event_discounts.setdefault(event["data"]["object"]["id"],
                                             event["data"]["object"])
        wanted = self.events.pending_discount_ids()
        for stale in set(self._event_discounts) - wanted:
            del self._event_discounts[stale]

    def _year_ago_mrr(self, data: fetch.StripeData, now: int) -> dict[str, Decimal] | None:
        """Customer MRR a year before the start of today (UTC) from paid invoices: a
        moment that stays put all day, so it is asked once a day (invoices of the
        past do not change) and every poll of the day values the same cohort. None
        while its year of invoices is still being read (cohort.py)."""
        day = now // DAY
        if self._cohort is None or self._cohort[0] != day:
            at = day * DAY - YEAR
            lines = self.cohort_lines.at(self.client, at, self._history_pages())
            if lines is None:
                return None
            self._cohort = (day, history.customer_mrr_from_invoices(lines, at, data.prices,
                                                                    self.fx_rates, ended(data)))
        return self._cohort[1]

    def _warn_missing_rates(self, kpis: RevenueKpis) -> None:
        for currency in sorted(set(kpis.missing_fx) - self._warned_currencies):
            log.warning("stripe: no fx_rates entry for %s; its amounts are left out of "
                        "reporting-currency sums (see kpi_unconverted_objects)", currency.upper())
            self._warned_currencies.add(currency)


SOURCE_TYPE = Registration(
    parse_config, lambda source_config, config: StripeSource(source_config, config.fx_rates))
