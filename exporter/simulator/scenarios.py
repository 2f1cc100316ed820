"""Demo scenarios: the simulated company calm, or in trouble that a documented threshold catches.

A scenario sets up the fake Stripe's company (whether the fake Mailgun's
newsletter domain is in trouble, how the fake CRMs' company sells, how the
fake helpdesks' support desk runs, how the product's users use it, and whether
the simulated application is up).

    store, ticker_options = SCENARIOS["payment-failures"].build(seed=9, customers=500, now=now)
    FakeStripe(store, live=True, ticker_options=ticker_options)

`calm` (the default) breaks no documented threshold for the demo's default
company (a test checks this through Prometheus); each other scenario is built
to raise the alerts it names, so a user can watch one travel from Prometheus
through Alertmanager to a receiver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from exporter.simulator.company import generate_company
from exporter.simulator.crm_company import CrmProfile
from exporter.simulator.periods import HOUR
from exporter.simulator.product_company import ProductProfile
from exporter.simulator.stripe_store import StripeStore
from exporter.simulator.support_company import SupportProfile
from exporter.simulator.ticker import CompanyTicker

# A card processor outage: most renewals fail and past-due invoices keep failing
# on Stripe's retries, so the failed amount of a day climbs past 5,000.
OUTAGE = {"renewal_failure": 0.8, "retry_success": 0.0, "retry_per_hour": 0.25}
OUTAGE_HOURS = 24


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    alerts: tuple[str, ...]  # what it is built to raise (none for calm)
    make: Callable[[int, int, int], StripeStore]
    ticker_options: dict = field(default_factory=dict)  # how the company moves on, live
    email_trouble: bool = False  # the fake Mailgun's newsletter domain stops delivering
    crm_profile: CrmProfile = CrmProfile()  # how the fake CRMs' company sells
    support_profile: SupportProfile = SupportProfile()  # how the fake helpdesks' desk runs
    product_profile: ProductProfile = ProductProfile()  # how the product's users use it
    platform_outage: bool = False  # the simulated application is down (probe, errors, latency)

    def build(self, seed: int, customers: int, now: int) -> tuple[StripeStore, dict]:
        return self.make(seed, customers, now), dict(self.ticker_options)


def _calm(seed: int, customers: int, now: int) -> StripeStore:
    return generate_company(seed=seed, customers=customers, now=now)


def _large_churn(seed: int, customers: int, now: int) -> StripeStore:
    return generate_company(seed=seed, customers=customers, now=now, large_churn=True)


def _payment_failures(seed: int, customers: int, now: int) -> StripeStore:
    """The company as it was a day ago, then a day of outage up to `now`."""
    store = generate_company(seed=seed, customers=customers, now=now - OUTAGE_HOURS * HOUR)
    CompanyTicker(store, rng_seed=seed, clock=lambda: now, **OUTAGE).tick()
    return store


SCENARIOS = {s.name: s for s in (
    Scenario("calm", "business as usual: every KPI inside its documented thresholds",
             (), _calm),
    Scenario("payment-failures",
             "a card processor outage since yesterday: failed payments pass the 5,000 "
             "critical threshold (warning at once, critical after the alert's `for`)",
             ("KpiFailedPaymentsAmountHigh",), _payment_failures, OUTAGE),
    Scenario("email-deliverability",
             "the newsletter domain's mail stops getting through today (~91 % delivered, "
             "~6 % bouncing): marketing's deliverability alerts fire",
             ("KpiEmailDeliveryRateLow", "KpiEmailDeliveryRateDrop", "KpiEmailHardBounceRateHigh"),
             _calm, email_trouble=True),
    Scenario("pipeline-slump",
             "campaigns paused for a month: fewer leads, and fewer of them qualify (~350 "
             "MQLs, ~15 % of them SQLs): marketing's and sales' funnel alerts fire",
             ("KpiSalesMqlsLow", "KpiSalesSqlsLow", "KpiSalesMqlToSqlConversionLow"), _calm,
             crm_profile=CrmProfile(leads_per_day=35, sql_share=0.15)),
    Scenario("support-spike",
             "a flood of tickets for two days (4 times the usual rate): support's volume "
             "spike warnings fire, daily and week over week",
             ("KpiSupportTicketVolumeVsNormalHigh", "KpiSupportTicketVolumeChangeHigh"), _calm,
             support_profile=SupportProfile(spike_factor=4, spike_days=2)),
    Scenario("csat-drop",
             "unhappy customers this week (about half the ratings satisfied): CSAT falls "
             "below its 85 % target and far below its 30-day value",
             ("KpiSupportCsatLow", "KpiSupportCsatDrop"), _calm,
             support_profile=SupportProfile(unhappy_share=0.5, unhappy_days=7)),
    Scenario("engagement-drop",
             "two in five users went quiet this week: active users fall more than 20 % "
             "week over week and product's engagement warning fires",
             ("KpiProductActiveUsersChangeLow",), _calm,
             product_profile=ProductProfile(engagement_drop=0.6)),
    Scenario("api-outage",
             "the application is down since the demo started: its probe fails, half the "
             "requests fail, the slow ones take seconds: the platform pages engineering",
             ("PlatformDown", "PlatformAvailabilityBudgetBurn", "PlatformErrorBudgetBurn",
              "PlatformErrorRatioHigh", "PlatformLatencyHigh"), _calm, platform_outage=True),
    Scenario("large-churn",
             "the largest customer (over 10,000 a year) cancelled a few hours ago: "
             "a critical alert pages finance at once",
             ("KpiLargestChurnArrHigh",), _large_churn),
)}
