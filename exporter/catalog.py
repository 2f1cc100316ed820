"""The KPI catalog: the single source of truth for every metric we export.

Each `Kpi` says what the number is (metric name, help, type, unit, labels), what
the business wants of it (target and direction), and when to raise an alarm
(thresholds with a severity and an owning team). The collector takes HELP and
TYPE from here; alert rules, dashboards and the README metrics table are
generated from here. Users change targets and thresholds in the `kpis:` section
of their config (see `apply_overrides`); nothing else should hard-code them.

Defaults reproduce the targets and thresholds the business documents (the
README's "KPIs, targets and alerts" table lists them). Where two documents
disagree the stricter value is the default and the description says so.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram"]
# How dashboards format the value: "currency" is money in the reporting currency,
# "money" is money in the currency named by the series' `currency` label, "number"
# a plain number (a score).
Unit = Literal["currency", "money", "ratio", "count", "seconds", "timestamp", "bool", "number"]
Severity = Literal["critical", "warning", "info"]
# The built-in KPIs' owners are finance, sales, marketing and support (the
# exporter's own alerts: engineering); a config may give a KPI to any team.
Team = str


@dataclass(frozen=True)
class Threshold:
    """One alarm condition on a KPI.

    kind "above"/"below": the value itself crosses `value`.
    kind "drop": the value fell by more than `value` (a 0-1 fraction) over `window`;
    with a `baseline` window, the value over `window` is that much below the value
    over `baseline` (both computed by the exporter, so no Prometheus history needed);
    with `over`, below its value that long ago (Prometheus history, `offset`).
    """

    name: str
    severity: Severity
    kind: Literal["above", "below", "drop"]
    value: float
    window: str | None = None
    note: str = ""
    baseline: str | None = None
    # How long the condition must hold before the alert fires; None: the kit's
    # default for the severity. "0s" for events that a window already holds.
    hold: str | None = None
    # A drop against the value this long ago in Prometheus' own history (`offset`),
    # for KPIs the exporter cannot value in the past itself (custom KPIs).
    over: str | None = None


def default_metric(key: str, unit: str) -> str:
    """`kpi_<key>`; a ratio ends in `_ratio` (Prometheus' convention: in PromQL
    "rate" means per second), so `customer_churn_rate` is `kpi_customer_churn_ratio`."""
    name = key
    if unit == "ratio":
        name = re.sub(r"_rate$", "", name)
        if not name.endswith("_ratio"):
            name += "_ratio"
    return f"kpi_{name}"


@dataclass(frozen=True)
class Kpi:
    key: str  # the name used in the config's `kpis:` section and by the sources' samples
    help: str
    unit: Unit
    labels: tuple[str, ...]
    description: str
    team: Team
    area: str  # revenue, email, sales, support: groups dashboards and docs
    type: MetricType = "gauge"
    target: float | None = None
    # Which way is good: "higher" or "lower"; None for tracked-only numbers.
    direction: Literal["higher", "lower"] | None = None
    thresholds: tuple[Threshold, ...] = field(default_factory=tuple)
    # A target per value of one label (support resolution: one per priority),
    # as ((value, target), ...); `target` is then None.
    target_label: str | None = None
    targets: tuple[tuple[str, float], ...] = ()
    # A Prometheus recording rule rather than an exporter metric: its PromQL
    # expression, `<job>` standing for the kit's job matcher (`metric` is then the
    # record's name). Replicas of the exporter are one: take the max over instances.
    recorded: str | None = None
    # The exported name; empty: default_metric(key, unit).
    metric: str = ""

    def __post_init__(self):
        if not self.metric:
            object.__setattr__(self, "metric", default_metric(self.key, self.unit))

    def threshold(self, name: str) -> Threshold:
        for threshold in self.thresholds:
            if threshold.name == name:
                return threshold
        raise KeyError(name)


@dataclass(frozen=True)
class HealthMetric:
    """A metric about the exporter itself rather than the business."""

    metric: str
    help: str
    labels: tuple[str, ...]
    unit: Unit
    type: MetricType = "gauge"

    @property
    def key(self) -> str:
        """What a source's samples name it by: the metric without `kpi_`."""
        return self.metric.removeprefix("kpi_")


REVENUE: tuple[Kpi, ...] = (
    Kpi(
        key="mrr",
        help="Monthly recurring revenue in the reporting currency: counted subscriptions' "
        "licensed prices normalised to a month, after discounts, before tax.",
        unit="currency",
        labels=("source",),
        description="Sum over counted subscriptions of each item's monthly-normalised price "
        "after discounts, converted with fx_rates. Target is the Q4 goal (north star: "
        "500K by month 12). Two documents set a critical month-over-month fall: MRR drop "
        "> 5 % and revenue decline > 10 %; the stricter 5 % is the default.",
        team="finance",
        area="revenue",
        target=100_000,
        direction="higher",
        thresholds=(
            Threshold("drop", "critical", "drop", 0.05, window="30d",
                      note="MRR fell > 5 % month over month (stricter of 5 % and 10 %)."),
        ),
    ),
    Kpi(
        key="mrr_by_currency",
        help="Monthly recurring revenue in each billing currency, in that currency's major unit.",
        unit="money",
        labels=("source", "currency"),
        description="MRR before conversion, one series per billing currency; a currency "
        "without an fx_rate shows here but not in kpi_mrr.",
        team="finance",
        area="revenue",
    ),
    Kpi(
        key="subscriptions",
        help="Subscriptions by upstream status, canceled included.",
        unit="count",
        labels=("source", "status"),
        description="Count of subscriptions per Stripe status (active, past_due, trialing, "
        "canceled, ...), every status seen.",
        team="finance",
        area="revenue",
    ),
    Kpi(
        key="paying_customers",
        help="Customers whose total MRR is above zero.",
        unit="count",
        labels=("source",),
        description="Customers with at least one counted subscription whose MRR after "
        "discounts is above zero.",
        team="finance",
        area="revenue",
        direction="higher",
    ),
    Kpi(
        key="arpa",
        help="Average revenue per paying account: MRR / paying customers, in the reporting currency.",
        unit="currency",
        labels=("source",),
        description="kpi_mrr divided by the paying customers whose MRR it includes (those "
        "in a currency with an fx rate); absent when there are none.",
        team="finance",
        area="revenue",
        target=500,
        direction="higher",
    ),
    Kpi(
        key="failed_payments",
        help="Failed charges created in the trailing window.",
        unit="count",
        labels=("source", "window"),
        description="Charges with status failed created in the last 24 hours.",
        team="finance",
        area="revenue",
        direction="lower",
    ),
    Kpi(
        key="failed_payments_amount",
        help="Amount of failed charges created in the trailing window, in the reporting currency.",
        unit="currency",
        labels=("source", "window"),
        description="Sum of the amounts of failed charges created in the last 24 hours, "
        "converted with fx_rates. Documented: critical above 5,000 a day. The warning "
        "level is not documented; it defaults to half the critical one.",
        team="finance",
        area="revenue",
        direction="lower",
        thresholds=(
            Threshold("warning", "warning", "above", 2_500, window="24h"),
            Threshold("critical", "critical", "above", 5_000, window="24h"),
        ),
    ),
)



def _revenue(key: str, help: str, description: str, *, unit: Unit = "currency",
             labels: tuple[str, ...] = ("source", "window"), **kw) -> Kpi:
    return Kpi(key=key, help=help, unit=unit, labels=labels,
               description=description, team=kw.pop("team", "finance"), area="revenue", **kw)


# Revenue dynamics: computed from Stripe's own history, see
# exporter/sources/stripe/dynamics.py and the README's "Revenue dynamics".
REVENUE_DYNAMICS: tuple[Kpi, ...] = (
    _revenue("mrr_movement",
             "MRR moved in the trailing window, by movement (new, expansion, contraction, "
             "churn, reactivation), in the reporting currency.",
             "Each customer's MRR now is compared with their MRR at the window start and the "
             "difference filed under one movement. Always positive: contraction and churn are "
             "amounts lost. kpi_mrr = kpi_mrr_window_start + new + expansion + reactivation "
             "- contraction - churn.",
             labels=("source", "movement", "window")),
    _revenue("mrr_window_start", "MRR at the start of the trailing window, in the reporting currency.",
             "Reconstructed from today's subscriptions with the window's subscription events "
             "undone, valued with today's fx_rates."),
    _revenue("mrr_growth_rate", "MRR growth over the trailing window as a ratio.",
             "(MRR now - MRR at window start) / MRR at window start; 30d from the event "
             "history, 1y from paid invoices a year ago. The documented target is 15-20 % "
             "month over month (30d); the documented colour bands are year over year (1y): "
             "green > 25 %, yellow 15-25 %, red < 15 %, which puts the warning at 15 %.",
             unit="ratio", target=0.15, direction="higher",
             thresholds=(Threshold("warning", "warning", "below", 0.15, window="1y",
                                   note="the red band of the documented year-over-year bands"),)),
    _revenue("customers_churned", "Customers whose MRR went to zero in the trailing window.",
             "Customers paying at the window start and paying nothing now.", unit="count"),
    _revenue("paying_customers_window_start", "Customers paying at the start of the trailing window.",
             "The denominator of the customer churn rate.", unit="count"),
    _revenue("customer_churn_rate",
             "Customer (logo) churn rate over the trailing window: churned / paying at window start.",
             "kpi_customers_churned / kpi_paying_customers_window_start. Documents set < 5 % and "
             "< 2 % a month as targets; the stricter 2 % is the default. Documented alarms: "
             "warning above 3 %, trend alert above 7 %.",
             unit="ratio", target=0.02, direction="lower",
             thresholds=(Threshold("warning", "warning", "above", 0.03, window="30d"),
                         Threshold("critical", "critical", "above", 0.07, window="30d",
                                   note="the documented trend alert"))),
    _revenue("gross_revenue_churn_rate",
             "Gross revenue churn over the trailing window: (churn + contraction) / MRR at window start.",
             "MRR lost to churn and contraction, as a share of MRR at the window start. Target < 3 %.",
             unit="ratio", target=0.03, direction="lower"),
    _revenue("net_revenue_churn_rate",
             "Net revenue churn over the trailing window: (churn + contraction - expansion) / "
             "MRR at window start.",
             "Negative when expansion outweighs losses. Equals 1 - net revenue retention over "
             "the same window.",
             unit="ratio", direction="lower"),
    _revenue("net_revenue_retention",
             "Net revenue retention: MRR now of the customers paying at the window start, "
             "over their MRR then.",
             "30d: (MRR at start + expansion - contraction - churn) / MRR at start. 1y: the "
             "cohort paying 12 months ago, valued then from their paid invoices and now from "
             "their subscriptions. Target > 110 % a year (north star 120 %).",
             unit="ratio", target=1.10, direction="higher",
             thresholds=(Threshold("warning", "warning", "below", 1.10, window="1y",
                                   note="below the documented annual target"),)),
    _revenue("nrr_cohort_mrr_start", "MRR of the retention cohort at the window start.",
             "The denominator of kpi_net_revenue_retention_ratio."),
    _revenue("nrr_cohort_mrr_now", "MRR now of the customers in the retention cohort.",
             "The numerator of kpi_net_revenue_retention_ratio."),
    _revenue("trials_active", "Subscriptions in trial now.", "Subscriptions with status trialing.",
             unit="count", labels=("source",)),
    _revenue("trials_started", "Trials that started in the trailing window.",
             "Subscriptions whose trial_start falls in the window.", unit="count"),
    _revenue("trials_ended", "Trials whose trial period ended in the trailing window.",
             "Subscriptions whose trial_end falls in the window and that are no longer trialing.",
             unit="count"),
    _revenue("trials_converted", "Trials that ended in the trailing window and went on to pay.",
             "Of the ended trials, those whose subscription outlived the trial end (active, "
             "past_due or unpaid now, or canceled later than the trial end).", unit="count"),
    _revenue("trial_conversion_rate",
             "Trial to paid conversion over the trailing window: converted / ended trials.",
             "kpi_trials_converted / kpi_trials_ended; absent when no trial ended. Target > 25 %, "
             "documented red below 20 %.",
             unit="ratio", target=0.25, direction="higher",
             thresholds=(Threshold("warning", "warning", "below", 0.20, window="30d"),)),
    _revenue("customer_lifetime_value",
             "Customer lifetime value: ARPA x gross margin / monthly customer churn rate, in "
             "the reporting currency.",
             "Uses the 30-day customer churn rate and sources.stripe.gross_margin (default "
             "0.80); absent when churn is zero (the value would be infinite). Target > 5,000.",
             labels=("source",), target=5000, direction="higher"),
    _revenue("largest_churn_arr",
             "Largest ARR lost to a single customer's churn in the trailing window, in the "
             "reporting currency.",
             "12 x the MRR at the window start of the customer with the most MRR among those "
             "whose MRR went to zero; 0 when nobody churned. Documented: critical on any churn "
             "of a customer with > 10,000 ARR.",
             team="finance", direction="lower",
             thresholds=(Threshold("critical", "critical", "above", 10_000, window="24h",
                                   # an event: the 24 h window holds it for a day, and
                                   # waiting would only delay the page
                                   hold="0s"),)),
    _revenue("refunds_amount", "Refunds created in the trailing window, in the reporting currency.",
             "Sum of succeeded and pending refunds created in the window."),
    _revenue("disputes_open", "Open disputes (awaiting a response or under review).",
             "Disputes with status warning_needs_response, warning_under_review, needs_response "
             "or under_review.", unit="count", labels=("source",)),
    _revenue("disputes_open_amount", "Amount of open disputes, in the reporting currency.",
             "Sum of the amounts of the open disputes.", labels=("source",)),
)

def _email(key: str, help: str, description: str, *, unit: Unit = "ratio",
           labels: tuple[str, ...] = ("source", "domain", "window"), **kw) -> Kpi:
    return Kpi(key=f"email_{key}", help=help, unit=unit,
               labels=labels, description=description, team="marketing", area="email", **kw)


# Email: Mailgun's Metrics API per sending domain, see
# exporter/sources/mailgun/kpis.py for the definitions.
EMAIL: tuple[Kpi, ...] = (
    _email("events", "Email events per sending domain over the trailing window, by event.",
           "Counts from the upstream's analytics: accepted (outgoing), delivered, "
           "failed_permanent (= bounced_hard + bounced_soft + suppressed), failed_temporary, "
           "opened, "
           "opened_unique, clicked, clicked_unique, unsubscribed, complained. Domains beyond "
           "sources.mailgun.max_domains are summed under domain=\"other\".",
           unit="count", labels=("source", "domain", "event", "window")),
    _email("delivery_rate", "Delivered / accepted outgoing messages over the trailing window.",
           "Deliverability: delivered / accepted; absent when nothing was accepted. Target "
           "> 98 %; documented critical when deliverability drops by more than 5 % (here: "
           "the last 24 h against the last 7 days, relative).",
           target=0.98, direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 0.98, window="24h",
                                 note="below the documented 98 % target"),
                       Threshold("drop", "critical", "drop", 0.05, window="24h",
                                 baseline="7d"))),
    _email("hard_bounce_rate", "Hard bounces / accepted outgoing messages over the trailing "
           "window.",
           "Hard bounces (bounced_hard: neither the soft bounces that ran out of retries nor "
           "the suppressed messages) / accepted; absent when nothing was accepted. Target < 2 %.",
           target=0.02, direction="lower",
           thresholds=(Threshold("warning", "warning", "above", 0.02, window="24h",
                                 note="above the documented 2 % target"),)),
    _email("complaint_rate", "Spam complaints / delivered messages over the trailing window.",
           "complained / delivered; absent when nothing was delivered. Industry guidance "
           "< 0.1 %.",
           target=0.001, direction="lower",
           thresholds=(Threshold("warning", "warning", "above", 0.001, window="24h",
                                 note="above the industry's 0.1 %"),)),
    _email("open_rate", "Unique opens / delivered messages over the trailing window.",
           "opened_unique / delivered; absent when nothing was delivered. Tracked, no target."),
    _email("click_rate", "Unique clicks / delivered messages over the trailing window.",
           "clicked_unique / delivered; absent when nothing was delivered. Tracked, no target."),
    _email("unsubscribe_rate", "Unsubscribes / delivered messages over the trailing window.",
           "unsubscribed / delivered; absent when nothing was delivered. Tracked, no target."),
    _email("suppressions", "Addresses on each suppression list of a sending domain.",
           "Entries in the domain's bounces, complaints and unsubscribes lists (listed less "
           "often than the events: sources.mailgun.suppressions_interval).",
           unit="count", labels=("source", "domain", "list")),
)

DAY = 86400


def _sales(key: str, help: str, description: str, *, unit: Unit = "count",
           labels: tuple[str, ...] = ("source", "window"), team: Team = "sales",
           metric: str | None = None, **kw) -> Kpi:
    return Kpi(key=f"sales_{key}", metric=metric or "", help=help, unit=unit,
               labels=labels, description=description, team=team, area="sales", **kw)


_STAGE = ("source", "pipeline", "stage")

# Sales and marketing pipeline: HubSpot or Salesforce, the same
# definitions for both, see exporter/sources/crm/pipeline.py. Windows are
# trailing; pipeline and stage labels come from the CRM (capped by max_stages).
SALES: tuple[Kpi, ...] = (
    _sales("pipeline_amount", "Open deal amount by pipeline and stage, in the reporting currency.",
           "Sum of the amounts of open deals (a deal without an amount adds 0). Tracked.",
           unit="currency", labels=_STAGE),
    _sales("pipeline_weighted_amount", "Open deal amount weighted by stage probability, by "
           "pipeline and stage, in the reporting currency.",
           "Each open deal's amount x its stage's probability (the stage's, not the deal's own "
           "override), summed. Tracked.", unit="currency", labels=_STAGE),
    _sales("open_deals", "Open deals by pipeline and stage.",
           "Deals in a stage that is not closed.", labels=_STAGE),
    _sales("deals_won", "Deals closed won with a close date in the trailing window.",
           "Closed-won deals whose close date is in the window."),
    _sales("deals_lost", "Deals closed lost with a close date in the trailing window.",
           "Closed deals that were not won, close date in the window."),
    _sales("won_amount", "Amount of the deals won in the trailing window, in the reporting "
           "currency.", "Sum of the amounts of the deals won in the window.", unit="currency"),
    _sales("win_rate", "Deals won / deals closed (won + lost) in the trailing window.",
           "won / (won + lost); absent when nothing closed. Target: 80 % in competitive deals "
           "(tracked, no alert).", unit="ratio", target=0.8, direction="higher"),
    _sales("average_deal_amount", "Average amount of the deals won in the trailing window, in "
           "the reporting currency.",
           "Won amount / won deals that have an amount; absent when none. Target 60K; "
           "documented yellow below 45K (judged over 90 days: a month holds few deals).",
           unit="currency", target=60_000, direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 45_000, window="90d",
                                 note="the documented yellow band"),)),
    _sales("cycle", "Median days from creation to close of the deals won in the trailing "
           "window, in seconds.",
           "Median of (close date - creation) over the deals won in the window; absent when "
           "none. Target 45 days; documented warning above 60 days (over 90 days of deals).",
           unit="seconds", metric="kpi_sales_cycle_seconds", target=45 * DAY, direction="lower",
           thresholds=(Threshold("warning", "warning", "above", 60 * DAY, window="90d"),)),
    _sales("stalled_deals", "Open deals whose stage has not changed for 14 days.",
           "Open deals that entered their current stage (or were created, if they never moved) "
           "more than 14 days ago.", labels=("source",), direction="lower"),
    _sales("stalled_amount", "Amount of the stalled open deals, in the reporting currency.",
           "Sum of the amounts of the stalled deals.", unit="currency", labels=("source",),
           direction="lower"),
    _sales("stage_changes", "Deals that entered their current stage within the trailing window "
           "(closing included).",
           "Open or closed deals whose last stage change is in the window. Documented: "
           "pipeline stagnation when nothing moved for 14 days.", direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 1, window="14d",
                                 note="no stage movement in 14 days"),)),
    _sales("leads", "New leads created in the trailing window.",
           "Contacts (HubSpot) or leads (Salesforce) created in the window. Tracked.",
           team="marketing"),
    _sales("mqls", "Leads that became marketing-qualified in the trailing window.",
           "Leads that entered the MQL stage in the window (HubSpot lifecycle stage, "
           "Salesforce lead status; both mappings configurable). Target 500 a month; "
           "documented red below 400.", team="marketing", target=500, direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 400, window="30d",
                                 note="the documented red band, a business trend"),)),
    _sales("sqls", "Leads that became sales-qualified in the trailing window.",
           "Leads that entered the SQL stage in the window. Target 125 a month; documented "
           "red below 100.", target=125, direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 100, window="30d",
                                 note="the documented red band, a business trend"),)),
    _sales("opportunities", "Leads that became opportunities in the trailing window.",
           "Leads that reached the opportunity stage (HubSpot) or were converted (Salesforce) "
           "in the window."),
    _sales("mql_to_sql_conversion", "SQLs / MQLs over the trailing window.",
           "Leads that became SQLs in the window / leads that became MQLs in it (a cohort-free "
           "flow ratio); absent without MQLs. Target 25 %; documented warning below 20 % "
           "(lead quality, routed to marketing).", unit="ratio", team="marketing", target=0.25,
           direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 0.2, window="30d"),)),
    _sales("sql_to_opportunity_conversion", "Opportunities / SQLs over the trailing window.",
           "Leads that became opportunities in the window / leads that became SQLs in it; absent "
           "without SQLs. Target 60 %; documented yellow below 50 %.", unit="ratio",
           target=0.6, direction="higher",
           thresholds=(Threshold("warning", "warning", "below", 0.5, window="30d"),)),
    _sales("lead_response", "Median time from a lead's creation to its first sales touch, for "
           "leads created in the trailing window, in seconds.",
           "Median over the touched leads created in the window (HubSpot: first sales "
           "engagement date; Salesforce: earliest Task or Event on the lead); absent when none "
           "was touched. Target under 2 hours; warning above it.",
           unit="seconds", metric="kpi_sales_lead_response_median_seconds", target=2 * 3600,
           direction="lower",
           thresholds=(Threshold("warning", "warning", "above", 2 * 3600, window="30d",
                                 note="above the documented 2-hour target"),)),
    _sales("lead_response_within_target", "Share of leads created in the trailing window that "
           "were touched within the lead response target.",
           "Leads touched within sales_lead_response's target / leads touched or waiting longer "
           "than it (an untouched lead counts against the share once it is overdue).",
           unit="ratio", direction="higher"),
)



def _support(key: str, help: str, description: str, *, unit: Unit = "count",
             labels: tuple[str, ...] = ("source", "window"), **kw) -> Kpi:
    return Kpi(key=f"support_{key}", metric=kw.pop("metric", ""), help=help,
               unit=unit, labels=labels, description=description, team="support",
               area="support", **kw)


_BY_PRIORITY = ("source", "priority", "window", "percentile")

# Customer support: Zendesk or Intercom, the same definitions for
# both, see exporter/sources/helpdesk/tickets.py. Windows are trailing 24h, 7d
# and 30d; priorities are urgent, high, normal and low.
SUPPORT: tuple[Kpi, ...] = (
    _support("open_tickets", "Unsolved tickets by status and priority.",
             "The backlog: tickets not solved, by the helpdesk's own status (new, open, pending, "
             "hold; Intercom: open, snoozed) and priority. Tracked.",
             labels=("source", "status", "priority")),
    _support("tickets_created", "Tickets created in the trailing window.",
             "Tickets (Intercom: conversations) created in the window, deleted ones aside."),
    _support("tickets_solved", "Tickets solved in the trailing window.",
             "Tickets whose last solve is in the window."),
    _support("first_reply", "Time from a ticket's creation to its first agent reply, median "
             "(percentile 50) and 90th percentile (90) by priority, over the trailing window.",
             "Over the tickets first replied to in the window; calendar time, or business hours "
             "with Zendesk's business_hours. No series for a window without replies. Tracked.",
             unit="seconds", labels=_BY_PRIORITY, metric="kpi_support_first_reply_seconds"),
    _support("resolution", "Time from a ticket's creation to its last solve, median (percentile "
             "50) and 90th percentile (90) by priority, over the trailing window.",
             "Over the tickets solved in the window (full resolution time). The documented "
             "targets, per priority: critical (urgent, high) < 4 hours, normal and low < 24 "
             "hours; override them under `targets:`. No series for an empty window.",
             unit="seconds", labels=_BY_PRIORITY, metric="kpi_support_resolution_seconds",
             direction="lower", target_label="priority",
             targets=(("urgent", 4 * 3600), ("high", 4 * 3600), ("normal", 24 * 3600),
                      ("low", 24 * 3600))),
    _support("resolution_within_sla", "Share of the tickets solved in the trailing window that "
             "were solved within their priority's resolution target.",
             "Tickets solved in the window with a resolution time at most the support_resolution "
             "target of their priority / tickets solved in the window, by priority. Tracked.",
             unit="ratio", labels=("source", "priority", "window"), direction="higher"),
    _support("sla_breaches", "Unsolved tickets older than their priority's resolution target.",
             "Tickets not solved and created longer ago than the support_resolution target of "
             "their priority (calendar time), by priority: each one already breaks the "
             "documented SLA. Pending tickets count too.",
             labels=("source", "priority"), direction="lower",
             thresholds=(Threshold("warning", "warning", "above", 0,
                                   note="Any ticket past its resolution target."),)),
    _support("csat", "Customer satisfaction: satisfied / all ratings given in the trailing window.",
             "Zendesk: good / (good + bad); Intercom: ratings of 4 or 5 / all ratings (1-5). "
             "Absent without ratings. Target 85 % (a support-specific document says 90 %; "
             "override the target and threshold for it). The documented critical fall, 0.5 "
             "points on a 5-point scale, is a tenth of the scale: here CSAT over 7 days more "
             "than 10 % below its 30-day value.",
             unit="ratio", target=0.85, direction="higher",
             thresholds=(Threshold("warning", "warning", "below", 0.85, window="7d"),
                         Threshold("drop", "critical", "drop", 0.10, window="7d",
                                   baseline="30d"))),
    _support("ratings", "Satisfaction ratings given in the trailing window.",
             "Ratings (Zendesk good or bad, Intercom 1-5) given in the window: how much "
             "kpi_support_csat_ratio rests on."),
    _support("ticket_volume_vs_normal", "Tickets created in the last 24 hours / the daily "
             "average of the 28 days before.",
             "1 is a normal day. Documented: a warning above 150 % of normal. Absent when the 28 "
             "days had no tickets.",
             unit="ratio", direction="lower",
             thresholds=(Threshold("warning", "warning", "above", 1.5, window="24h"),)),
    _support("ticket_volume_change", "Tickets created in the last 7 days / the 7 days before, "
             "minus 1.",
             "Week-over-week change in ticket volume. Documented: a warning above +50 %. Absent "
             "when the week before had no tickets.",
             unit="ratio", direction="lower",
             thresholds=(Threshold("warning", "warning", "above", 0.5, window="7d"),)),
    _support("backlog_growth", "(Tickets created - tickets solved) / tickets created over the "
             "last 7 days.",
             "The share of the week's tickets that piled up in the backlog (negative: it shrank). "
             "Not documented: the warning at 25 % (a quarter of a week's tickets left over) is "
             "our default.",
             unit="ratio", direction="lower",
             thresholds=(Threshold("warning", "warning", "above", 0.25, window="7d"),)),
    _support("tickets_per_paying_customer", "Tickets created in the last 30 days / paying "
             "customers (a recording rule; needs Stripe too).",
             "kpi_support_tickets_created over 30 days / the sum of kpi_paying_customers, per "
             "helpdesk source. Documented target: under 2 % of customers a month.",
             unit="ratio", labels=("source",), target=0.02, direction="lower",
             metric="source:kpi_support_tickets_per_paying_customer:ratio_30d",
             recorded='max by (job, source) (kpi_support_tickets_created{<job>,window="30d"}) '
                      "/ on(job) group_left() sum by (job) "
                      "(max by (job, source) (kpi_paying_customers{<job>}))"),
)

def _product(key: str, help: str, description: str, *, unit: Unit = "count",
             labels: tuple[str, ...] = ("source", "window"), team: Team = "product",
             **kw) -> Kpi:
    return Kpi(key=key, help=help, unit=unit, labels=labels, description=description,
               team=team, area="product", **kw)


# Product usage and NPS: the `sql` source's built-in queries over the company's
# own database (events and survey answers), see exporter/sources/sql/product.py.
PRODUCT: tuple[Kpi, ...] = (
    _product("product_active_users", "Distinct users with at least one event in the trailing "
             "window (24h: DAU, 7d: WAU, 30d: MAU).",
             "Distinct user_column values of the events whose time_column is in (now - window, "
             "now]. Documented targets: DAU >= 10,000, MAU >= 50,000.",
             direction="higher", target_label="window",
             targets=(("24h", 10_000), ("30d", 50_000))),
    _product("product_stickiness", "Daily over monthly active users: active users over 24 "
             "hours / over 30 days.",
             "kpi_product_active_users{window=\"24h\"} / {window=\"30d\"}; absent without "
             "monthly active users. Documented target: DAU/MAU > 30 %.",
             unit="ratio", labels=("source",), target=0.30, direction="higher"),
    _product("product_active_users_change", "Active users over the last 7 days against the 7 "
             "days before, as a change (-0.2: a fifth fewer).",
             "(active in the last 7 days - active in the 7 days before) / active in the 7 days "
             "before; absent when the week before had nobody. Documented: a warning when "
             "engagement drops more than 20 % week over week.",
             unit="ratio", direction="higher",
             thresholds=(Threshold("warning", "warning", "below", -0.2, window="7d",
                                   note="engagement down more than 20 % week over week"),)),
    _product("nps", "Net promoter score over the trailing window: % promoters (9-10) minus % "
             "detractors (0-6), -100 to 100.",
             "100 x (answers of 9 or 10 - answers of 0 to 6) / all answers in the window; "
             "absent without answers. Documented target > 50 (enterprise > 60).",
             unit="number", team="customer-success", target=50, direction="higher"),
    _product("nps_score_average", "The average answer (0-10) of the survey over the trailing "
             "window.",
             "Mean of the score_column of the answers in the window; absent without answers. "
             "Documented: a warning below 7 on the 10-point scale.",
             unit="number", team="customer-success", direction="higher",
             thresholds=(Threshold("warning", "warning", "below", 7, window="90d"),)),
    _product("nps_responses", "Survey answers in the trailing window.",
             "Answers whose time_column is in the window: what kpi_nps rests on.",
             team="customer-success"),
)

# Values the business gives in the config (`constants:`), exported as they are,
# with source="config". A custom KPI of the same key (from SQL) takes its place.
CONSTANTS: tuple[Kpi, ...] = (
    Kpi(key="cac", help="Customer acquisition cost in the reporting currency: what winning "
        "one new customer costs.",
        unit="currency", labels=("source",), team="finance", area="revenue",
        description="From `constants: {cac: ...}` in the config, or a custom KPI `cac` (spend "
        "/ new customers from SQL). With it, the recording rule kpi:ltv_to_cac:ratio "
        "(customer lifetime value / CAC) has its documented target > 3.",
        direction="lower"),
)

# LTV / CAC, generated as a recording rule whenever the catalog has a `cac`.
LTV_TO_CAC = Kpi(
    key="ltv_to_cac", help="Customer lifetime value over customer acquisition cost (a recording "
    "rule; needs kpi_cac).",
    unit="number", labels=(), team="finance", area="revenue", target=3, direction="higher",
    description="kpi_customer_lifetime_value / kpi_cac, per job. Documented target > 3 (one "
    "document: > 10).", metric="kpi:ltv_to_cac:ratio",
    recorded="max by (job) (kpi_customer_lifetime_value{<job>}) / on(job) max by (job) "
             "(kpi_cac{<job>})")

KPIS: tuple[Kpi, ...] = REVENUE + REVENUE_DYNAMICS + EMAIL + SALES + SUPPORT + PRODUCT

HEALTH: tuple[HealthMetric, ...] = (
    HealthMetric("kpi_source_up", "1 if the last poll of the source succeeded, 0 if it failed "
                 "(absent while the first poll runs). After a failure the KPI series keep the "
                 "values of the last successful poll.",
                 ("source",), "bool"),
    HealthMetric("kpi_source_syncing", "1 while the first poll of the source is still running "
                 "(a first read of a large account can take many minutes), else 0.",
                 ("source",), "bool"),
    HealthMetric("kpi_source_last_success_timestamp_seconds",
                 "Unix time of the last successful poll of the source (absent before the first).",
                 ("source",), "timestamp"),
    HealthMetric("kpi_source_poll_duration_seconds", "Duration of the last poll of the source.",
                 ("source",), "seconds"),
    HealthMetric("kpi_source_poll_seconds", "Durations of the polls of the source, failed "
                 "ones included.", ("source",), "seconds", "histogram"),
    HealthMetric("kpi_source_poll_interval_seconds", "How often the source is polled (config).",
                 ("source",), "seconds"),
    HealthMetric("kpi_source_polls_total", "Polls of the source by result (success or failure).",
                 ("source", "result"), "count", "counter"),
    HealthMetric("kpi_source_poll_failures_total", "Failed polls of the source by reason: the "
                 "HTTP client's (a request failed for good, the poll's request cap or deadline "
                 "reached, endless paging), malformed (data the source cannot use) or internal.",
                 ("source", "reason"), "count", "counter"),
    HealthMetric("kpi_source_requests_total", "HTTP requests sent to the source, retries included.",
                 ("source",), "count", "counter"),
    HealthMetric("kpi_source_request_retries_total", "HTTP requests to the source that were retries.",
                 ("source",), "count", "counter"),
    HealthMetric("kpi_source_request_errors_total",
                 "Failed HTTP requests to the source by reason, retried ones included.",
                 ("source", "reason"), "count", "counter"),
    HealthMetric("kpi_source_rate_limit_wait_seconds_total",
                 "Time spent waiting on the client-side rate limit for the source.",
                 ("source",), "seconds", "counter"),
    HealthMetric("kpi_sql_query_failures_total", "Failed runs of each query of the sql source "
                 "(a built-in one: product, nps; or a custom KPI's key).",
                 ("source", "query"), "count", "counter"),
    HealthMetric("kpi_exporter_build_info", "Always 1: the exporter's version and the Python "
                 "it runs on, as labels.", ("version", "python"), "bool"),
    HealthMetric("kpi_reporting_currency_info", "Always 1: the currency (ISO 4217, lower case) "
                 "that every reporting-currency money series is in, as a label.",
                 ("currency",), "bool"),
    HealthMetric("kpi_unconverted_objects",
                 "Objects (counted subscriptions, failed charges, deals) left out of reporting-currency "
                 "sums because fx_rates has no rate for their currency.",
                 ("source", "currency"), "count"),
)


class UnknownKpi(KeyError):
    pass


def duration_text(seconds: float) -> str:
    """7200 -> "2h", 5184000 -> "60d": the largest whole unit, as in config durations."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def percent(fraction: float) -> str:
    """0.001 -> "0.1%", 0.98 -> "98%": as many digits as the value has, no float noise."""
    return f"{fraction * 100:.6g}%"


def number(value: float) -> str:
    """A number for PromQL and JSON text: 5184000, not 5.184e+06."""
    return f"{value:.15g}"


def value_text(unit: Unit, value: float) -> str:
    """A target or threshold as people write it: 98%, 2h, 45,000."""
    if unit == "ratio":
        return percent(value)
    if unit == "seconds":
        return duration_text(value)
    return f"{value:,g}"


def targets_text(kpi: Kpi) -> str:
    """A per-label target list as people write it: "urgent 4h, high 4h, ..."."""
    return ", ".join(f"{value} {value_text(kpi.unit, target)}" for value, target in kpi.targets)


def by_key(kpis: tuple[Kpi, ...] = KPIS) -> dict[str, Kpi]:
    return {kpi.key: kpi for kpi in kpis}


def by_metric(kpis: tuple[Kpi, ...] = KPIS) -> dict[str, Kpi]:
    return {kpi.metric: kpi for kpi in kpis}


@dataclass(frozen=True)
class KpiOverride:
    """What a user's config may change about one KPI."""

    target: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)  # by target_label value
    team: str | None = None  # a new owner
    disabled: frozenset[str] = frozenset()  # thresholds turned off (`warning: off`)


def apply_overrides(overrides: dict[str, KpiOverride],
                    kpis: tuple[Kpi, ...] = KPIS) -> tuple[Kpi, ...]:
    """Return the catalog with the user's targets and threshold values applied.

    Config validation already checked the names; a bad one here is a bug.
    """
    catalog = by_key(kpis)
    result = []
    for kpi in kpis:
        override = overrides.get(kpi.key)
        if override is None:
            result.append(kpi)
            continue
        thresholds = tuple(
            dataclasses.replace(t, value=override.thresholds[t.name])
            if t.name in override.thresholds else t
            for t in kpi.thresholds if t.name not in override.disabled
        )
        target = kpi.target if override.target is None else override.target
        targets = tuple((value, override.targets.get(value, default))
                        for value, default in kpi.targets)
        result.append(dataclasses.replace(kpi, target=target, thresholds=thresholds,
                                          targets=targets, team=override.team or kpi.team))
    unknown = set(overrides) - set(catalog)
    if unknown:
        raise UnknownKpi(sorted(unknown)[0])
    return tuple(result)
