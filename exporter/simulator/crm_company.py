"""A simulated sales pipeline, in no CRM's shape: the fake HubSpot and the fake
Salesforce both serve it, each in its own API's shape, so the two sources can be
checked to give the same numbers for the same deals.

    company = generate_crm(seed=9, now=now)
    company.pipelines, company.deals, company.leads

Two pipelines (a sales pipeline and an enterprise one) whose shared stage labels
have the same probability (Salesforce's stages are global). Deals in usd, eur
and gbp, a few without an amount. Leads arrive every day; about a third become
MQLs, about a quarter of those SQLs and most SQLs opportunities. The default
(`calm`) company sits inside every documented sales threshold: ~1,500 leads, ~500
MQLs, ~140 SQLs a month, average won deal ~60 K, cycle ~35 days, leads touched in
well under 2 hours.

Close dates and conversion dates are whole days (midnight UTC), as Salesforce's
CloseDate and ConvertedDate are dates; everything else is to the second.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

DAY = 86400
HOUR = 3600


@dataclass(frozen=True)
class CrmStage:
    id: str
    label: str
    probability: Decimal  # 0-1
    is_closed: bool = False
    is_won: bool = False


@dataclass(frozen=True)
class CrmPipeline:
    id: str
    label: str
    stages: tuple[CrmStage, ...]

    def stage(self, stage_id: str) -> CrmStage:
        return next(s for s in self.stages if s.id == stage_id)

    @property
    def open_stages(self) -> tuple[CrmStage, ...]:
        return tuple(s for s in self.stages if not s.is_closed)


@dataclass
class CrmDeal:
    id: int
    name: str
    pipeline: str  # CrmPipeline.id
    stage: str  # CrmStage.id
    amount: Decimal | None  # in `currency`; None: the deal has no amount
    currency: str
    created: int
    stage_changed: int  # when it entered its current stage
    modified: int
    closed: int | None = None  # midnight UTC of the close date, for closed deals


@dataclass
class CrmLead:
    id: int
    email: str
    created: int
    modified: int
    mql: int | None = None  # when it became a marketing-qualified lead
    sql: int | None = None
    opportunity: int | None = None  # midnight UTC of its conversion
    first_touch: int | None = None  # the first sales activity on it


@dataclass
class CrmCompany:
    now: int
    currency: str  # the company's own currency (HubSpot's companyCurrency)
    pipelines: tuple[CrmPipeline, ...]
    deals: list[CrmDeal] = field(default_factory=list)
    leads: list[CrmLead] = field(default_factory=list)

    def pipeline(self, pipeline_id: str) -> CrmPipeline:
        return next(p for p in self.pipelines if p.id == pipeline_id)


def _stage(stage_id: str, label: str, probability: str, closed: bool = False,
           won: bool = False) -> CrmStage:
    return CrmStage(stage_id, label, Decimal(probability), closed, won)


CLOSED_WON = _stage("closedwon", "Closed won", "1.0", closed=True, won=True)
CLOSED_LOST = _stage("closedlost", "Closed lost", "0.0", closed=True)

# HubSpot's default pipeline, and an enterprise one sharing two of its open stages.
PIPELINES = (
    CrmPipeline("default", "Sales Pipeline", (
        _stage("appointmentscheduled", "Appointment scheduled", "0.2"),
        _stage("qualifiedtobuy", "Qualified to buy", "0.4"),
        _stage("presentationscheduled", "Presentation scheduled", "0.6"),
        _stage("decisionmakerboughtin", "Decision maker bought-in", "0.8"),
        _stage("contractsent", "Contract sent", "0.9"),
        CLOSED_WON, CLOSED_LOST)),
    CrmPipeline("enterprise", "Enterprise", (
        _stage("discovery", "Discovery", "0.1"),
        _stage("presentationscheduled", "Presentation scheduled", "0.6"),
        _stage("security", "Security review", "0.7"),
        _stage("contractsent", "Contract sent", "0.9"),
        CLOSED_WON, CLOSED_LOST)),
)


@dataclass(frozen=True)
class CrmProfile:
    """How the company sells; the defaults are the calm demo company."""

    leads_per_day: float = 50.0
    mql_share: float = 0.34  # of leads
    sql_share: float = 0.28  # of MQLs
    opportunity_share: float = 0.62  # of SQLs
    touched_share: float = 0.92  # leads a salesperson ever touches
    touch_median_minutes: float = 45.0
    deals_per_day: float = 3.0
    enterprise_share: float = 0.2
    deal_median: float = 48_000.0  # in the company currency; enterprise deals x3
    no_amount_share: float = 0.04
    win_share: float = 0.4  # of closed deals
    cycle_median_days: float = 34.0
    history_days: int = 150


def midnight(t: int) -> int:
    return t - t % DAY


def generate_crm(seed: int, now: int, profile: CrmProfile = CrmProfile()) -> CrmCompany:
    """A company whose leads and deals span the last `history_days` up to `now`."""
    rng = random.Random(seed)
    company = CrmCompany(now=now, currency="usd", pipelines=PIPELINES)
    start = now - profile.history_days * DAY
    _add_leads(company, rng, profile, start)
    _add_deals(company, rng, profile, start)
    return company


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def _arrivals(rng: random.Random, per_day: float, start: int, now: int) -> list[int]:
    """Arrival times at a steady rate (exponential gaps)."""
    times, t = [], float(start)
    while True:
        t += rng.expovariate(per_day / DAY)
        if t > now:
            return times
        times.append(int(t))


def _add_leads(company: CrmCompany, rng: random.Random, profile: CrmProfile, start: int) -> None:
    now = company.now
    for number, created in enumerate(_arrivals(rng, profile.leads_per_day, start, now), 1):
        lead = CrmLead(id=number, email=f"lead{number}@prospect.example", created=created,
                       modified=created)
        if rng.random() < profile.touched_share:
            touch = created + int(_lognormal(rng, profile.touch_median_minutes * 60, 1.0))
            lead.first_touch = touch if touch <= now else None
        if rng.random() < profile.mql_share:
            lead.mql = _later(rng, created, 4 * DAY, now)
        if lead.mql is not None and rng.random() < profile.sql_share:
            lead.sql = _later(rng, lead.mql, 5 * DAY, now)
        if lead.sql is not None and rng.random() < profile.opportunity_share:
            converted = _later(rng, lead.sql, 4 * DAY, now)
            # A conversion date is a day; one today is dated today, not in the future.
            lead.opportunity = None if converted is None else midnight(converted)
        lead.modified = max(t for t in (created, lead.mql, lead.sql, lead.opportunity,
                                        lead.first_touch) if t is not None)
        company.leads.append(lead)


def _later(rng: random.Random, after: int, mean: float, now: int) -> int | None:
    at = after + int(rng.expovariate(1 / mean))
    return at if at <= now else None


def _add_deals(company: CrmCompany, rng: random.Random, profile: CrmProfile, start: int) -> None:
    now = company.now
    for number, created in enumerate(_arrivals(rng, profile.deals_per_day, start, now), 1):
        enterprise = rng.random() < profile.enterprise_share
        pipeline = company.pipelines[1 if enterprise else 0]
        currency = rng.choices(("usd", "eur", "gbp"), (0.75, 0.17, 0.08))[0]
        amount = None
        if rng.random() >= profile.no_amount_share:
            median = profile.deal_median * (3 if enterprise else 1)
            amount = Decimal(round(_lognormal(rng, median, 0.45), -2))
        deal = CrmDeal(id=number, name=f"Deal {number}", pipeline=pipeline.id,
                       stage=pipeline.open_stages[0].id, amount=amount, currency=currency,
                       created=created, stage_changed=created, modified=created)
        cycle = int(_lognormal(rng, profile.cycle_median_days * DAY, 0.35))
        if created + cycle <= now:
            won = rng.random() < profile.win_share
            deal.closed = midnight(created + cycle)
            deal.stage = (CLOSED_WON if won else CLOSED_LOST).id
            deal.stage_changed = max(created, deal.closed)
        else:
            # Open: it has moved along its stages at its own pace, and sometimes stalled.
            elapsed = now - created
            opens = pipeline.open_stages
            index = min(len(opens) - 1, int(elapsed / cycle * len(opens)))
            deal.stage = opens[index].id
            deal.stage_changed = created if index == 0 else \
                created + int(elapsed * index / (index + 1) * rng.uniform(0.7, 1.0))
        deal.modified = max(deal.stage_changed, created + rng.randrange(0, max(1, now - created)))
        company.deals.append(deal)
