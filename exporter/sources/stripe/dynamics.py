"""Revenue dynamics: MRR movements, churn, retention, trials, lifetime value.

Pure functions over per-customer MRR at two moments and over subscription
records. Customer MRR here is in the reporting currency, converted at today's
fx_rates at both ends, so that exchange-rate changes never show as movements.
Movements follow ChartMogul's classification; net revenue churn is the
(Baremetrics) share of starting MRR lost net of expansion, so that it equals
1 - net revenue retention (ChartMogul also nets off reactivation). The README
section "Revenue dynamics" states every definition; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from decimal import Decimal

from exporter import money
from exporter.sources.stripe.mrr import MrrRules, running_mrr
from exporter.sources.stripe.records import Dispute, Refund, Subscription

ZERO = Decimal(0)
DAY = 86400
MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")


@dataclass(frozen=True)
class MrrBridge:
    """How MRR got from the start of a window to now, customer by customer.

    start + new + expansion + reactivation - contraction - churn == end, exactly.
    """

    start: Decimal
    end: Decimal
    movements: dict[str, Decimal]  # movement -> MRR moved (always >= 0)
    customers: dict[str, int]  # movement -> customers that moved that way
    paying_at_start: int

    @property
    def growth_rate(self) -> Decimal | None:
        return (self.end - self.start) / self.start if self.start else None

    @property
    def customer_churn_rate(self) -> Decimal | None:
        return Decimal(self.customers["churn"]) / self.paying_at_start if self.paying_at_start else None

    @property
    def gross_revenue_churn_rate(self) -> Decimal | None:
        lost = self.movements["churn"] + self.movements["contraction"]
        return lost / self.start if self.start else None

    @property
    def net_revenue_churn_rate(self) -> Decimal | None:
        """Lost MRR net of expansion, among customers paying at the start."""
        net = self.movements["churn"] + self.movements["contraction"] - self.movements["expansion"]
        return net / self.start if self.start else None

    @property
    def retained(self) -> Decimal:
        """MRR now of the customers paying at the start: start + expansion - contraction - churn."""
        m = self.movements
        return self.start + m["expansion"] - m["contraction"] - m["churn"]

    @property
    def net_revenue_retention(self) -> Decimal | None:
        """(start + expansion - contraction - churn) / start: 1 - net revenue churn."""
        rate = self.net_revenue_churn_rate
        return None if rate is None else 1 - rate


def mrr_bridge(start: Mapping[str, Decimal], end: Mapping[str, Decimal],
               paid_before: Container[str]) -> MrrBridge:
    """Classify each customer's change between two MRR snapshots.

    `start` and `end` map customer -> MRR (absent means zero). `paid_before`
    holds the customers who had paid at some time before the window: a customer
    who starts paying again is a reactivation, one who never paid is new.
    """
    movements = dict.fromkeys(MOVEMENTS, ZERO)
    customers = dict.fromkeys(MOVEMENTS, 0)

    def move(customer: str, before: Decimal, after: Decimal) -> None:
        if before == 0:
            kind = "reactivation" if customer in paid_before else "new"
        elif after == 0:
            kind = "churn"
        else:
            kind = "expansion" if after > before else "contraction"
        movements[kind] += abs(after - before)
        customers[kind] += 1

    # Two loops, not one over set(start) | set(end): at a million customers those
    # sets are some 160 MiB, built by C calls that hold the GIL (a scrape would wait
    # them out). The totals are summed here for the same reason, each snapshot's in
    # its own order (as sum() over its values would).
    start_total, end_total, paying_at_start = ZERO, ZERO, 0
    for customer, before in start.items():
        start_total += before
        paying_at_start += before > 0
        after = end.get(customer, ZERO)
        if before != after:
            move(customer, before, after)
    for customer, after in end.items():
        end_total += after
        if after != 0 and customer not in start:
            move(customer, ZERO, after)
    return MrrBridge(start=start_total, end=end_total, movements=movements,
                     customers=customers, paying_at_start=paying_at_start)


def cohort_retention(start: dict[str, Decimal], end: dict[str, Decimal]) -> tuple[Decimal, Decimal]:
    """MRR of the customers paying at the start, then and now (for NRR over a cohort).

    Customers who joined later are not in the cohort; those who left count as zero now.
    """
    cohort = [customer for customer, amount in start.items() if amount > 0]
    return (sum((start[c] for c in cohort), ZERO),
            sum((end.get(c, ZERO) for c in cohort), ZERO))


def new_payers(start: Mapping[str, Decimal], end: Mapping[str, Decimal]) -> set[str]:
    """The customers paying at the end and not at the start: the only ones
    mrr_bridge asks `paid_before` about (new, or a reactivation)."""
    return {customer for customer, after in end.items() if after > 0 and not start.get(customer)}


def had_paid_before(subscriptions: list[Subscription], at: int,
                    rules: MrrRules = MrrRules(), among: Container[str] | None = None
                    ) -> set[str]:
    """Customers who paid for a subscription before `at` (of `among`, when given:
    the customers a bridge asks about, new_payers; not a set of nearly all of them).

    Stripe keeps ended subscriptions, so this reaches back to a customer's
    first one. A subscription counts when it was worth more than zero (not a
    free plan or a 100 % coupon) and lived for at least a day past its start
    and trial before `at`; one that never completed its first payment
    (incomplete, incomplete_expired) never paid.
    """
    customers = set()
    for sub in subscriptions:
        if sub.status in ("incomplete", "incomplete_expired") or sub.customer in customers:
            continue
        if among is not None and sub.customer not in among:
            continue
        paying_from = max(sub.start_date, sub.trial_end or 0)
        lived_a_day = sub.ended_at is None or sub.ended_at >= paying_from + DAY
        if paying_from + DAY > at or not lived_a_day:
            continue
        # Its last known items and discounts, valued as if it were still running.
        if running_mrr(sub, paying_from, rules) > 0:
            customers.add(sub.customer)
    return customers


@dataclass(frozen=True)
class TrialKpis:
    active: int
    started: int  # trials that started in the window
    ended: int  # trials whose trial period ended in the window
    converted: int  # of those, the ones that went on to pay

    @property
    def conversion_rate(self) -> Decimal | None:
        return Decimal(self.converted) / self.ended if self.ended else None


def trials_ended_in(subscriptions: list[Subscription], now: int, window: int) -> list[Subscription]:
    """Subscriptions whose trial period ended in the window."""
    since = now - window
    return [sub for sub in subscriptions if sub.trial_end is not None
            and since < sub.trial_end <= now and sub.status != "trialing"]


def needs_payment_check(sub: Subscription) -> bool:
    """An ended trial whose status alone does not say whether it ever paid:
    past_due or unpaid (its first invoice may have failed), or canceled after
    the trial ended. An active one paid; one that ended with its trial did not."""
    if sub.status in ("past_due", "unpaid"):
        return True
    return sub.status == "canceled" and sub.ended_at is not None and sub.ended_at > sub.trial_end


def trial_kpis(subscriptions: list[Subscription], now: int, window: int,
               paid_after_trial: set[str] = frozenset()) -> TrialKpis:
    """Trials from the subscriptions' own trial dates.

    A trial converted when its subscription is active now, or when it paid an
    invoice after the trial (`paid_after_trial`: subscription ids, looked up
    for those `needs_payment_check` names). Everything else lapsed: canceled
    at the trial end, paused for lack of a payment method, never paid.
    """
    since = now - window
    ended = trials_ended_in(subscriptions, now, window)
    converted = [sub for sub in ended if sub.status == "active" or sub.id in paid_after_trial]
    return TrialKpis(
        active=sum(1 for sub in subscriptions if sub.status == "trialing"),
        started=sum(1 for sub in subscriptions
                    if sub.trial_start is not None and since < sub.trial_start <= now),
        ended=len(ended),
        converted=len(converted),
    )


def lifetime_value(arpa: Decimal | None, gross_margin: Decimal,
                   monthly_churn_rate: Decimal | None) -> Decimal | None:
    """ARPA x gross margin / monthly customer churn; undefined without churn."""
    if arpa is None or not monthly_churn_rate:
        return None
    return arpa * gross_margin / monthly_churn_rate


def largest_churn_arr(start: Mapping[str, Decimal], end: Mapping[str, Decimal]) -> Decimal:
    """The largest ARR (12 x MRR) lost to one customer's churn; zero when nobody churned."""
    lost = [amount for customer, amount in start.items() if amount > 0 and end.get(customer, ZERO) == 0]
    return 12 * max(lost, default=ZERO)


# Refunds that are or will be money out; failed and canceled ones are not.
REFUNDED = frozenset({"succeeded", "pending"})
OPEN_DISPUTE_STATUSES = frozenset({"warning_needs_response", "warning_under_review",
                                   "needs_response", "under_review"})


@dataclass(frozen=True)
class RevenueDynamics:
    mrr: Decimal  # now
    bridge: MrrBridge | None  # the 30-day window; None while the events are being read
    # 12 months ago, of the customers paying then; None while not known (cohort.py)
    cohort_start: Decimal | None
    cohort_now: Decimal | None
    trials: TrialKpis
    lifetime_value: Decimal | None
    largest_churn_arr: Decimal | None  # in the last 24 hours; None with the bridge
    refunds_amount: Decimal
    disputes_open: int
    disputes_open_amount: Decimal

    year_ago_mrr: Decimal | None = ZERO  # every customer's, from paid invoices

    @property
    def annual_retention(self) -> Decimal | None:
        if not self.cohort_start or self.cohort_now is None:
            return None
        return self.cohort_now / self.cohort_start

    @property
    def annual_growth_rate(self) -> Decimal | None:
        if not self.year_ago_mrr:
            return None
        return (self.mrr - self.year_ago_mrr) / self.year_ago_mrr


def revenue_dynamics(*, now_mrr: dict[str, Decimal],
                     window_start_mrr: Mapping[str, Decimal] | None,
                     day_ago_mrr: Mapping[str, Decimal] | None,
                     year_ago_mrr: dict[str, Decimal] | None,
                     paid_before: set[str], paid_after_trial: set[str],
                     subscriptions: list[Subscription],
                     refunds: list[Refund], disputes: list[Dispute], arpa: Decimal | None,
                     gross_margin: Decimal, fx_rates: dict[str, Decimal], now: int,
                     window: int) -> RevenueDynamics:
    """Every dynamics KPI from customer MRR at four moments and today's objects
    (`year_ago_mrr` None: not known yet, and neither is anything of the year; so
    for `window_start_mrr` and the window, and `day_ago_mrr` and the last day)."""
    bridge = None if window_start_mrr is None else \
        mrr_bridge(window_start_mrr, now_mrr, paid_before)
    cohort_start, cohort_now = (None, None) if year_ago_mrr is None else \
        cohort_retention(year_ago_mrr, now_mrr)
    open_disputes = [d for d in disputes if d.status in OPEN_DISPUTE_STATUSES]
    return RevenueDynamics(
        mrr=sum(now_mrr.values(), ZERO),
        bridge=bridge,
        cohort_start=cohort_start,
        cohort_now=cohort_now,
        trials=trial_kpis(subscriptions, now, window, paid_after_trial),
        lifetime_value=None if bridge is None else
        lifetime_value(arpa, gross_margin, bridge.customer_churn_rate),
        largest_churn_arr=None if day_ago_mrr is None else largest_churn_arr(day_ago_mrr, now_mrr),
        refunds_amount=_converted_sum(
            (r for r in refunds if r.status in REFUNDED and r.created > now - window), fx_rates),
        disputes_open=len(open_disputes),
        disputes_open_amount=_converted_sum(open_disputes, fx_rates),
        year_ago_mrr=None if year_ago_mrr is None else sum(year_ago_mrr.values(), ZERO),
    )


def _converted_sum(objects, fx_rates: dict[str, Decimal]) -> Decimal:
    """Amounts (minor units) summed in the reporting currency; no rate, left out."""
    total = ZERO
    for obj in objects:
        converted = money.to_reporting(obj.amount, obj.currency, fx_rates)
        if converted is not None:
            total += converted
    return total
