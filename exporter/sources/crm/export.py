"""The samples both CRM sources export: one function from deals and leads to metrics.

HubSpot and Salesforce each turn their objects into `pipeline.Deal` and
`pipeline.Lead` records; from there on everything is shared, so one dashboard
and one set of alerts serve either (the `source` label tells them apart).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from exporter import catalog
from exporter.labels import OTHER, fold, top
from exporter.sources.base import Sample
from exporter.sources.crm import pipeline
from exporter.sources.crm.pipeline import DAY, Deal, Lead

CLOSED_WINDOWS = {"30d": 30 * DAY, "90d": 90 * DAY}
LEAD_WINDOWS = {"30d": 30 * DAY}
# How far back a source must read: the longest window of each kind.
CLOSED_LOOKBACK = max(CLOSED_WINDOWS.values())
LEAD_LOOKBACK = max(LEAD_WINDOWS.values())
STAGE_CHANGE_WINDOW = ("14d", pipeline.STALLED_AFTER)
MAX_CURRENCIES = 40  # currency label values exported; the rest sum under "other"


@dataclass(frozen=True)
class CrmOptions:
    """What both CRM sources' configs share."""

    max_stages: int = 40  # (pipeline, stage) label pairs kept; the rest sum under "other"
    # Lead response share: touched within this many seconds (the catalog's
    # sales_lead_response target; the source passes the configured one).
    response_target: int = pipeline.RESPONSE_TARGET
    stalled_after: int = pipeline.STALLED_AFTER


def crm_options(config: Any, max_stages: int) -> CrmOptions:
    """A CRM source's options, with the lead response target from the (overridden) catalog."""
    target = catalog.by_key(config.kpis)["sales_lead_response"].target
    return CrmOptions(max_stages=max_stages,
                      response_target=int(target) if target else pipeline.RESPONSE_TARGET)


@dataclass(frozen=True)
class CrmData:
    """One poll's records: deals and leads in the reporting currency."""

    deals: list[Deal]
    leads: list[Lead]
    # Deals left out of money sums because fx_rates has no rate: {currency: count}
    unconverted: dict[str, int] = field(default_factory=dict)


def samples(source: str, data: CrmData, now: int, options: CrmOptions = CrmOptions()) -> list[Sample]:
    def sample(kpi: str, value: float, **labels: str) -> Sample:
        return Sample(kpi, {"source": source, **labels}, float(value))

    result: list[Sample] = []
    stages = pipeline.capped_stages(pipeline.open_pipeline(data.deals), options.max_stages)
    for (pipeline_label, stage), (amount, weighted, count) in sorted(stages.items()):
        labels = {"pipeline": pipeline_label, "stage": stage}
        result += [sample("sales_pipeline_amount", amount, **labels),
                   sample("sales_pipeline_weighted_amount", weighted, **labels),
                   sample("sales_open_deals", count, **labels)]

    for window, seconds in CLOSED_WINDOWS.items():
        closed = pipeline.closed(data.deals, now, seconds)
        result += [sample("sales_deals_won", closed.won, window=window),
                   sample("sales_deals_lost", closed.lost, window=window),
                   sample("sales_won_amount", closed.won_amount, window=window)]
        result += _defined(sample, window, {
            "sales_win_rate": closed.win_rate,
            "sales_average_deal_amount": closed.average_deal,
            "sales_cycle": None if closed.cycle_days is None
            else closed.cycle_days * DAY})

    stalled, stalled_amount = pipeline.stalled(data.deals, now, options.stalled_after)
    result += [sample("sales_stalled_deals", stalled),
               sample("sales_stalled_amount", stalled_amount)]
    window, seconds = STAGE_CHANGE_WINDOW
    result.append(sample("sales_stage_changes", pipeline.stage_changes(data.deals, now, seconds),
                         window=window))

    for window, seconds in LEAD_WINDOWS.items():
        funnel = pipeline.funnel(data.leads, now, seconds)
        result += [sample("sales_leads", funnel.leads, window=window),
                   sample("sales_mqls", funnel.mqls, window=window),
                   sample("sales_sqls", funnel.sqls, window=window),
                   sample("sales_opportunities", funnel.opportunities, window=window)]
        response = pipeline.response(data.leads, now, seconds, options.response_target)
        result += _defined(sample, window, {
            "sales_mql_to_sql_conversion": funnel.mql_to_sql,
            "sales_sql_to_opportunity_conversion": funnel.sql_to_opportunity,
            "sales_lead_response": None if response.median_hours is None
            else response.median_hours * pipeline.HOUR,
            "sales_lead_response_within_target": response.within_target})

    unconverted = fold(data.unconverted, top(data.unconverted, MAX_CURRENCIES), 0,
                       lambda a, b: a + b, OTHER)  # currencies: an upstream-made label
    result += [sample("unconverted_objects", count, currency=currency)
               for currency, count in sorted(unconverted.items())]
    return result


# What a past moment's records give (backfill): the closed deals and the lead
# funnel. The open pipeline then, its stalled deals and stage changes need each
# deal's stage at that moment, which neither CRM keeps.
BACKFILLED = frozenset({
    "sales_deals_won", "sales_deals_lost", "sales_won_amount", "sales_win_rate",
    "sales_average_deal_amount", "sales_cycle", "sales_leads", "sales_mqls", "sales_sqls",
    "sales_opportunities", "sales_mql_to_sql_conversion", "sales_sql_to_opportunity_conversion",
    "sales_lead_response", "sales_lead_response_within_target"})


def as_of(data: CrmData, at: int) -> CrmData:
    """The deals closed by `at`, and the leads created by then with what happened to
    them later taken away (a deal closed later was open then, in a stage not kept)."""
    def until(moment: int | None) -> int | None:
        return moment if moment is not None and moment <= at else None

    def then(lead: Lead) -> Lead:
        moments = (lead.mql, lead.sql, lead.opportunity, lead.first_touch)
        if all(moment is None or moment <= at for moment in moments):
            return lead  # most leads: nothing to take back (and no copy to make)
        return dataclasses.replace(lead, mql=until(lead.mql), sql=until(lead.sql),
                                   opportunity=until(lead.opportunity),
                                   first_touch=until(lead.first_touch))

    deals = [d for d in data.deals if d.stage.is_closed and d.closed is not None
             and d.closed <= at and d.created <= at]
    return CrmData(deals, [then(lead) for lead in data.leads if lead.created <= at])


def samples_at(source: str, data: CrmData, at: int,
               options: CrmOptions = CrmOptions()) -> list[Sample]:
    """The BACKFILLED samples of a past moment, from today's records."""
    return [s for s in samples(source, as_of(data, at), at, options) if s.kpi in BACKFILLED]


def _defined(sample, window: str, values: dict) -> list[Sample]:
    """A ratio or median without anything to divide or rank has no series at all."""
    return [sample(kpi, value, window=window) for kpi, value in values.items()
            if value is not None]
